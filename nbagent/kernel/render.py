"""Turn a `CellResult` into the observation text a model reads."""

from __future__ import annotations

import re
from typing import Any

from nbagent.trajectory import (
    CellOutput,
    CellResult,
    CellStatus,
    DisplayData,
    ErrorOutput,
    ExecuteResult,
    StreamOutput,
)

# CSI sequences (colours, cursor moves), OSC sequences (titles, hyperlinks) and lone escapes.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]{0,4096}(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
_TEXT_MIMES = ("text/plain", "text/markdown", "text/latex")


def strip_ansi(text: str) -> str:
    """`text` without terminal escape sequences."""
    return _ANSI.sub("", text)


def _apply_carriage_returns(text: str) -> str:
    """A carriage return rewrites its line (progress bars): keep what the last rewrite left."""
    if "\r" not in text:
        return text
    lines = text.replace("\r\n", "\n").split("\n")
    return "\n".join(_overwrite(line) for line in lines)


def _overwrite(line: str) -> str:
    shown = ""
    for segment in line.split("\r"):
        shown = segment + shown[len(segment) :]
    return shown


def _clean(text: str) -> str:
    return _apply_carriage_returns(strip_ansi(text))


def _mime_placeholder(mime: str, value: Any) -> str:
    if isinstance(value, str) and mime.startswith("image/") and not mime.endswith("svg+xml"):
        encoded = value.replace("\n", "")
        size = len(encoded) * 3 // 4 - encoded[-2:].count("=")  # base64 -> bytes
        return f"[{mime}, {size:,} bytes: kept in trajectory]"
    size = len(value) if isinstance(value, str) else len(str(value))
    return f"[{mime}, {size:,} characters: kept in trajectory]"


def _render_bundle(data: dict[str, Any]) -> str:
    parts = [_mime_placeholder(mime, value) for mime, value in data.items() if mime.startswith("image/")]
    text_mime = next((mime for mime in _TEXT_MIMES if mime in data), None)
    if text_mime is not None:
        value = data[text_mime]
        parts.append(_clean("".join(value) if isinstance(value, list) else str(value)))
    elif not parts:
        parts = [_mime_placeholder(mime, value) for mime, value in data.items()]
    return " ".join(parts)


def _render_output(output: CellOutput) -> str:
    if isinstance(output, StreamOutput):
        return _clean(output.text)
    if isinstance(output, ErrorOutput):
        if output.traceback:
            return _clean("\n".join(output.traceback)) + "\n"
        return f"{output.ename}: {output.evalue}\n"
    if isinstance(output, ExecuteResult | DisplayData):
        return _render_bundle(output.data) + "\n"
    raise TypeError(f"unknown output {output!r}")


def truncate_middle(text: str, budget_chars: int) -> str:
    """`text` cut to about `budget_chars`, keeping its head and tail around a marker that says how much
    was cut. Text within the budget is returned unchanged."""
    if len(text) <= budget_chars:
        return text
    marker_room = 80
    keep = max(budget_chars - marker_room, 2)
    head_len = keep // 2
    tail_len = keep - head_len
    cut = len(text) - head_len - tail_len
    marker = f"\n[... {cut:,} characters cut from the middle of this output ...]\n"
    return text[:head_len] + marker + text[len(text) - tail_len :]


def render_cell(result: CellResult, budget_chars: int = 4000) -> str:
    """The observation text for the model: outputs in order, ANSI-free, images as placeholders, the
    error traceback, and the result's note (timeout, crash, dropped output); cut head+tail to about
    `budget_chars`.

    An ok cell that printed nothing renders as the empty string.
    """
    if budget_chars < 100:
        raise ValueError(f"budget_chars must be at least 100, got {budget_chars}")
    body = "".join(_render_output(output) for output in result.outputs).rstrip("\n")
    if not result.note:
        return truncate_middle(body, budget_chars)
    note = f"[{'note' if result.status is CellStatus.OK else result.status.value}] {result.note}"
    if not body:
        return truncate_middle(note, budget_chars)
    room = max(budget_chars - len(note) - 1, budget_chars // 2)
    return f"{truncate_middle(body, room)}\n{note}"
