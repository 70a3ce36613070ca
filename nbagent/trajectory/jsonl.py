"""Trajectory files: JSONL, one record per line, appended and flushed one finished episode at a time.

This module owns the rule for a torn file (a writer killed mid-record leaves a last line without its
newline): `torn_tail_bytes` measures it, `truncate_torn_tail` cuts it (a resumed collection runs that
episode again), `TrajectoryWriter` ends it with a newline before appending, and readers report or skip
it as one corrupt line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from nbagent.trajectory.schema import SCHEMA_VERSION, Trajectory

_CHUNK = 1 << 16


def torn_tail_bytes(path: str | Path) -> int:
    """Size of the final line of `path` when it lacks its newline (0 for a whole file or none)."""
    p = Path(path)
    if not p.exists():
        return 0
    size = p.stat().st_size
    if size == 0:
        return 0
    with p.open("rb") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return 0
        end = size
        while end > 0:
            start = max(0, end - _CHUNK)
            f.seek(start)
            newline = f.read(end - start).rfind(b"\n")
            if newline >= 0:
                return size - (start + newline + 1)
            end = start
    return size


def truncate_torn_tail(path: str | Path) -> int:
    """Cut a final line that lacks its newline (a record whose write was interrupted); return bytes cut."""
    torn = torn_tail_bytes(path)
    if torn:
        p = Path(path)
        with p.open("rb+") as f:
            f.truncate(p.stat().st_size - torn)
    return torn


class CorruptTrajectoryError(ValueError):
    """A line of a trajectory file could not be parsed."""

    def __init__(self, path: Path, line_no: int, reason: str) -> None:
        super().__init__(
            f"{path}:{line_no}: corrupt trajectory record ({reason}). "
            "Pass on_error='skip' to skip bad lines, or repair or delete that line."
        )
        self.path = path
        self.line_no = line_no
        self.reason = reason


class TrajectoryWriter:
    """Appends one trajectory per line and flushes it, so a crash loses at most the episode in flight."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        torn = torn_tail_bytes(self.path) > 0
        self._file = self.path.open("a", encoding="utf-8")
        if torn:
            # A previous writer died mid-record: end that fragment's line so the next record stays whole
            # (readers report or skip the fragment as one corrupt line).
            self._file.write("\n")
        self.count = 0

    def write(self, trajectory: Trajectory) -> None:
        self._file.write(trajectory.to_json_line())
        self._file.flush()
        self.count += 1

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> TrajectoryWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_trajectories(path: str | Path, on_error: Literal["raise", "skip"] = "raise") -> Iterator[Trajectory]:
    """Stream the trajectories of a JSONL file.

    A corrupt line raises `CorruptTrajectoryError` naming the file and line, or is skipped (with
    ``on_error="skip"``). A final line without a newline (a write cut short) is treated the same way.
    """
    p = Path(path)
    with p.open("r", encoding="utf-8", errors="replace") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                if not isinstance(data, dict):
                    raise ValueError("not a JSON object")
                version = data.get("schema_version")
                if version != SCHEMA_VERSION:
                    raise ValueError(f"schema_version {version!r}, this nbagent reads {SCHEMA_VERSION}")
                yield Trajectory.model_validate(data)
            except (ValueError, ValidationError) as exc:
                if on_error == "skip":
                    continue
                reason = str(exc).splitlines()[0]
                raise CorruptTrajectoryError(p, line_no, reason) from exc
