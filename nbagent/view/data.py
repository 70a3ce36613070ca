"""What `nbagent view` shows: the episodes of a path, indexed by byte offset, and a run folder's records.

A path is a trajectory file, a folder of them, or an `nbagent-train rl` run folder (``metrics.jsonl``
beside ``trajectories/iter-NNNNN.jsonl``; eval ``report.json`` files anywhere below it). Indexing reads
each line once with `json.loads` and keeps only a row (the table's columns) and where the line starts, so
a whole episode is read again, by offset, only when it is opened. Records are sent as they were written:
the page escapes every string it shows.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbagent.trajectory import SCHEMA_VERSION

Row = dict[str, Any]
METRICS = "metrics.jsonl"
"""The run folder's metrics file (named by `nbagent_train.runs.metrics`, which nbagent cannot import)."""
REPORT = "report.json"
_ITERATION = re.compile(r"iter-(\d+)$")
_PROMPT_CHARS = 300


@dataclass(frozen=True)
class Location:
    """Where one episode's line lies."""

    file: Path
    offset: int
    length: int


def _tokens(record: dict[str, Any]) -> int:
    total = 0
    for step in record.get("steps") or []:
        call = step.get("model_call") or {}
        usage = call.get("usage") or {}
        ids = call.get("completion_token_ids")
        total += usage.get("completion_tokens") or (len(ids) if ids else 0)
    return total


def summarize(record: dict[str, Any], index: int, source: str, iteration: int | None) -> Row:
    """The table row of one trajectory record (a JSON object as written)."""
    task = record.get("task") or {}
    reward = record.get("reward") or {}
    return {
        "index": index,
        "id": record.get("id"),
        "file": source,
        "iteration": iteration,
        "task": task.get("id"),
        "prompt": str(task.get("prompt", ""))[:_PROMPT_CHARS],
        "environment": record.get("environment"),
        "split": record.get("split"),
        "group": record.get("group_id"),
        "sample": record.get("sample_index", 0),
        "reward": reward.get("total"),
        "breakdown": reward.get("breakdown") or {},
        "termination": record.get("termination"),
        "steps": len(record.get("steps") or []),
        "tokens": _tokens(record),
        "wall_s": record.get("wall_s", 0.0),
        "policy_version": (record.get("model") or {}).get("policy_version"),
    }


def _record(line: bytes) -> dict[str, Any] | None:
    """The trajectory record of a line, or None for a blank, torn or foreign one."""
    try:
        data = json.loads(line)
    except ValueError:
        return None
    if isinstance(data, dict) and data.get("schema_version") == SCHEMA_VERSION and "task" in data:
        return data
    return None


def _trajectory_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*.jsonl") if p.is_file() and p.name != METRICS)


def _read_metrics(path: Path) -> list[dict[str, Any]]:
    """The lines of ``metrics.jsonl`` that are records with an integer iteration (a torn one is left out)."""
    found: list[dict[str, Any]] = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("iteration"), int):
            found.append(record)
    return found


def _read_reports(root: Path) -> list[dict[str, Any]]:
    """Eval reports (``nbagent-train eval``'s ``report.json``: a split and one row per policy)."""
    reports: list[dict[str, Any]] = []
    for path in sorted(root.rglob(REPORT)):
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            continue
        if isinstance(report, dict) and isinstance(report.get("policies"), list):
            reports.append({"file": str(path.relative_to(root)), **report})
    return reports


@dataclass
class Collection:
    """The episodes under one path, indexed, and a run folder's metrics and eval reports."""

    root: Path
    rows: list[Row] = field(default_factory=list)
    locations: list[Location] = field(default_factory=list)
    skipped: int = 0
    """Lines that were not trajectory records (torn, corrupt or another schema version)."""
    metrics: list[dict[str, Any]] = field(default_factory=list)
    reports: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def open(cls, path: str | Path) -> Collection:
        """Index `path` (a trajectory file, a folder of them, or a run folder)."""
        root = Path(path).resolve()
        if not root.exists():
            raise FileNotFoundError(f"{path} does not exist")
        found = cls(root)
        base = root.parent if root.is_file() else root
        for file in _trajectory_files(root):
            found._index(file, str(file.relative_to(base)))
        if root.is_dir():
            if (root / METRICS).is_file():
                found.metrics = _read_metrics(root / METRICS)
            found.reports = _read_reports(root)
        return found

    def _index(self, file: Path, source: str) -> None:
        match = _ITERATION.search(file.stem)
        iteration = int(match.group(1)) if match else None
        offset = 0
        with file.open("rb") as f:
            for line in f:
                record = _record(line) if line.endswith(b"\n") else None
                if record is not None:
                    self.rows.append(summarize(record, len(self.rows), source, iteration))
                    self.locations.append(Location(file, offset, len(line)))
                elif line.strip():
                    self.skipped += 1
                offset += len(line)

    @property
    def kind(self) -> str:
        """``file``, ``folder`` or ``run`` (a folder with a ``metrics.jsonl``)."""
        if self.root.is_file():
            return "file"
        return "run" if (self.root / METRICS).is_file() else "folder"

    def summary(self) -> dict[str, Any]:
        """Everything the page needs but the episodes themselves."""
        return {
            "path": str(self.root),
            "kind": self.kind,
            "episodes": len(self.rows),
            "skipped": self.skipped,
            "metrics": self.metrics,
            "reports": self.reports,
        }

    def episode(self, index: int) -> dict[str, Any]:
        """The record of episode `index`, read again from its file (IndexError when there is none)."""
        if not 0 <= index < len(self.locations):
            raise IndexError(index)
        where = self.locations[index]
        with where.file.open("rb") as f:
            f.seek(where.offset)
            record = _record(f.read(where.length))
        if record is None:
            raise IndexError(index)  # the file changed under us
        return record
