"""Math task files: JSONL or CSV rows of ``{"id","problem","answer"}`` or GSM8K's ``question/answer``.

In GSM8K rows the answer is a worked solution ending in ``#### 42``: the reference is the part after
``####`` and the whole solution is kept in the metadata.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nbagent.errors import ConfigError
from nbagent.trajectory import TaskSpec

__all__ = ["MathDatasetError", "load_math_file", "row_to_task"]


class MathDatasetError(ConfigError):
    """A math task file is missing or malformed."""


def row_to_task(row: Mapping[str, Any], *, dataset: str, index: int) -> TaskSpec:
    """One task from a row with ``problem`` (or ``question``) and ``answer``; ``id`` is optional."""
    low = {str(k).strip().lower(): v for k, v in row.items()}
    problem = low.get("problem") if low.get("problem") is not None else low.get("question")
    if problem is None or low.get("answer") is None:
        raise MathDatasetError(
            f"{dataset} row {index}: needs 'problem' (or 'question') and 'answer', has {sorted(low)}"
        )
    answer = str(low["answer"])
    extra = low.get("metadata")
    metadata: dict[str, Any] = {**(extra if isinstance(extra, dict) else {}), "dataset": dataset}
    metadata["problem"] = str(problem)
    if "####" in answer:
        metadata["solution"] = answer
        answer = answer.rsplit("####", 1)[1].strip()
    for key in ("level", "type", "subject"):
        if key in low:
            metadata[key] = low[key]
    raw_id = low.get("id")
    if raw_id in (None, ""):
        raw_id = hashlib.sha1(str(problem).strip().encode()).hexdigest()[:12]
    task_id = str(raw_id) if str(raw_id).startswith(f"{dataset}-") else f"{dataset}-{raw_id}"
    return TaskSpec(id=task_id, prompt=str(problem), references=[answer], metadata=metadata)


def load_math_file(path: str | Path, *, dataset: str | None = None) -> list[TaskSpec]:
    """The tasks of a JSONL or CSV file (``dataset`` defaults to the file's stem)."""
    p = Path(path)
    if not p.is_file():
        raise MathDatasetError(f"math task file {p} does not exist")
    name = dataset or p.stem.lower()
    rows: list[Any]
    if p.suffix.lower() == ".csv":
        with p.open(encoding="utf-8-sig", newline="") as f:
            rows = list(csv.DictReader(f))
    else:
        rows = []
        for line_no, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise MathDatasetError(f"{p}:{line_no}: not valid JSON ({exc.msg})") from exc
    if not rows:
        raise MathDatasetError(f"math task file {p} holds no tasks")
    tasks = []
    for n, row in enumerate(rows, start=1):
        if not isinstance(row, Mapping):
            raise MathDatasetError(f"{p}: row {n} is {type(row).__name__}, expected an object")
        tasks.append(row_to_task(row, dataset=name, index=n))
    ids = [t.id for t in tasks]
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})[:3]
        raise MathDatasetError(f"{p}: task ids repeat ({', '.join(dupes)}); give each row a unique 'id'")
    return tasks
