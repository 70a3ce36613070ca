"""Collect a cell's iopub messages into nbformat outputs, keeping at most a fixed amount of text.

A cell that prints 50 MB must not cost the host 50 MB per cell in the trajectory: the collector keeps
the first half of its budget (head) and a rolling last half (tail), counts what fell out in between, and
puts a marker there. Consecutive stream chunks of the same name are merged, as notebooks show them.
"""

from __future__ import annotations

import json
import re
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from nbagent.trajectory import CellOutput, DisplayData, ErrorOutput, ExecuteResult, StreamOutput

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """`text` with lone surrogates (undecodable bytes smuggled through JSON) replaced by U+FFFD."""
    return _LONE_SURROGATE.sub("\ufffd", text)


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, list):
        return [_clean(item) for item in value]
    if isinstance(value, dict):
        return {clean_text(str(key)): _clean(item) for key, item in value.items()}
    return value


def _bundle_size(data: dict[str, Any]) -> int:
    return sum(len(v) if isinstance(v, str) else len(json.dumps(v, default=str)) for v in data.values())


@dataclass
class _Item:
    """One output being collected; streams keep their chunks in a deque until the end."""

    kind: str
    name: str = ""
    chunks: deque[str] = field(default_factory=deque)
    content: dict[str, Any] = field(default_factory=dict)
    size: int = 0


class OutputCollector:
    """Turns the iopub messages of one cell into a bounded list of nbformat outputs."""

    def __init__(self, max_chars: int) -> None:
        self.max_chars = max_chars
        self._head_limit = max_chars // 2
        self._tail_limit = max_chars - self._head_limit
        self._reset()

    def _reset(self) -> None:
        self._head: list[_Item] = []
        self._tail: deque[_Item] = deque()
        self._head_size = 0
        self._tail_size = 0
        self.dropped_chars = 0
        self._tail_mode = False  # once output overflowed the head, everything after goes to the tail
        self._clear_pending = False
        self._displays: dict[str, list[_Item]] = {}

    # -- messages -----------------------------------------------------------------------------------

    def add(self, msg_type: str, content: dict[str, Any]) -> None:
        """Take one iopub message of the cell (other message types are ignored)."""
        if msg_type == "stream":
            self._before_output()
            self._add_stream(str(content.get("name", "stdout")), str(content.get("text", "")))
        elif msg_type in ("display_data", "execute_result", "error"):
            self._before_output()
            self._add_rich(msg_type, content)
        elif msg_type == "update_display_data":
            self._update_display(content)
        elif msg_type == "clear_output":
            if content.get("wait"):
                self._clear_pending = True
            else:
                self._reset()

    def _before_output(self) -> None:
        if self._clear_pending:
            self._reset()

    def _add_stream(self, name: str, text: str) -> None:
        if not text:
            return
        if not self._tail_mode:
            room = self._head_limit - self._head_size
            if len(text) <= room:
                self._append_stream(self._head, name, text)
                self._head_size += len(text)
                return
            if room > 0:
                self._append_stream(self._head, name, text[:room])
                self._head_size += room
                text = text[room:]
            self._tail_mode = True
        self._append_stream(self._tail, name, text)
        self._tail_size += len(text)
        self._trim_tail()

    @staticmethod
    def _append_stream(items: list[_Item] | deque[_Item], name: str, text: str) -> None:
        last = items[-1] if items else None
        if last is not None and last.kind == "stream" and last.name == name:
            last.chunks.append(text)
            last.size += len(text)
        else:
            items.append(_Item("stream", name=name, chunks=deque([text]), size=len(text)))

    def _add_rich(self, msg_type: str, content: dict[str, Any]) -> None:
        if msg_type == "error":
            item = _Item(
                "error",
                content={
                    "ename": str(content.get("ename", "")),
                    "evalue": str(content.get("evalue", "")),
                    "traceback": [str(line) for line in content.get("traceback", [])],
                },
            )
            item.size = sum(len(line) for line in item.content["traceback"]) + len(item.content["evalue"])
        else:
            data = dict(content.get("data", {}))
            item = _Item(
                msg_type,
                content={
                    "data": data,
                    "metadata": dict(content.get("metadata", {})),
                    "execution_count": content.get("execution_count"),
                },
                size=_bundle_size(data),
            )
            display_id = (content.get("transient") or {}).get("display_id")
            if display_id:
                self._displays.setdefault(str(display_id), []).append(item)
        if not self._tail_mode and self._head_size + item.size <= self._head_limit:
            self._head.append(item)
            self._head_size += item.size
        else:
            self._tail_mode = True
            self._tail.append(item)
            self._tail_size += item.size
            self._trim_tail()

    def _update_display(self, content: dict[str, Any]) -> None:
        display_id = (content.get("transient") or {}).get("display_id")
        for item in self._displays.get(str(display_id), []):
            item.content["data"] = dict(content.get("data", {}))
            item.content["metadata"] = dict(content.get("metadata", {}))

    def _trim_tail(self) -> None:
        while self._tail_size > self._tail_limit and self._tail:
            first = self._tail[0]
            excess = self._tail_size - self._tail_limit
            if first.kind == "stream" and first.chunks:
                chunk = first.chunks[0]
                cut = min(excess, len(chunk))
                if cut == len(chunk):
                    first.chunks.popleft()
                else:
                    first.chunks[0] = chunk[cut:]
                first.size -= cut
                if not first.chunks:
                    self._tail.popleft()
            else:
                self._tail.popleft()
                cut = first.size
            self._tail_size -= cut
            self.dropped_chars += cut

    # -- result -------------------------------------------------------------------------------------

    def dropped_note(self) -> str | None:
        """A sentence about the dropped output, or None when nothing was dropped."""
        if not self.dropped_chars:
            return None
        return (
            f"The cell printed {self.dropped_chars:,} more characters than the {self.max_chars:,} kept "
            "per cell; the middle of its output was dropped."
        )

    def outputs(self) -> list[CellOutput]:
        """The collected outputs, with a marker where output was dropped."""
        merged: list[_Item] = []
        for item in self._head:
            self._merge(merged, item)
        if self.dropped_chars:
            marker = (
                f"\n[... {self.dropped_chars:,} characters of output dropped here: the cell printed more "
                f"than the {self.max_chars:,} kept per cell ...]\n"
            )
            self._merge(merged, _Item("stream", name="stderr", chunks=deque([marker])))
        for item in self._tail:
            self._merge(merged, item)
        return [self._build(item) for item in merged]

    @staticmethod
    def _merge(merged: list[_Item], item: _Item) -> None:
        last = merged[-1] if merged else None
        if item.kind != "stream":
            merged.append(item)
        elif last is not None and last.kind == "stream" and last.name == item.name:
            last.chunks.extend(item.chunks)
        else:
            merged.append(_Item("stream", name=item.name, chunks=deque(item.chunks)))

    @staticmethod
    def _build(item: _Item) -> CellOutput:
        if item.kind == "stream":
            text = clean_text("".join(item.chunks))
            return (
                StreamOutput(name="stderr", text=text)
                if item.name == "stderr"
                else StreamOutput(name="stdout", text=text)
            )
        content = _clean(item.content)
        if item.kind == "error":
            return ErrorOutput(**content)
        if item.kind == "execute_result":
            return ExecuteResult(**content)
        return DisplayData(data=content["data"], metadata=content["metadata"])
