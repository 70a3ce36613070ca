"""A run's metrics: one JSON object per iteration in `metrics.jsonl`, mirrored to TensorBoard and wandb.

This module owns the file's name and how it is read: `parse_metrics_line` is the one rule for a line
(a torn line, left by a kill mid-write, is None), used by `read_metrics`, by `MetricsLogger` when a
resumed run drops what it redoes, and by the RL run folder when it sets later iterations aside.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger("nbagent_train")

METRICS_FILE = "metrics.jsonl"

Record = dict[str, Any]


def _clean(value: Any) -> Any:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    return value


class MetricsLogger:
    """Appends metrics lines (flushed at once) and mirrors numbers to TensorBoard under `tb/`."""

    def __init__(self, out_dir: Path, *, tensorboard: bool = True, keep_until: int | None = None) -> None:
        """`keep_until`: when resuming, drop lines logged after that iteration (they are redone)."""
        self.path = Path(out_dir) / METRICS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if keep_until is not None and self.path.exists():
            kept = [
                line
                for line in self.path.read_text().splitlines()
                if (r := parse_metrics_line(line)) is not None and r["iteration"] <= keep_until
            ]
            self.path.write_text("".join(line + "\n" for line in kept))
        self._file = self.path.open("a", encoding="utf-8")
        self._writer: Any = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(Path(out_dir) / "tb"))

    def log(self, iteration: int, metrics: dict[str, Any]) -> None:
        record = {"iteration": iteration, "time": time.time(), **{k: _clean(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._writer is not None:
            for key, value in metrics.items():
                if (
                    isinstance(value, int | float)
                    and not isinstance(value, bool)
                    and _clean(value) is not None
                ):
                    self._writer.add_scalar(f"train/{key}", value, iteration)
            self._writer.flush()

    def close(self) -> None:
        self._file.close()
        if self._writer is not None:
            self._writer.close()


def parse_metrics_line(line: str) -> Record | None:
    """The record of one metrics line, or None for a blank, torn or foreign one (no integer iteration)."""
    try:
        record = json.loads(line)
        if isinstance(record, dict) and isinstance(record.get("iteration"), int):
            return record
    except ValueError:
        pass
    return None


def read_metrics(path: str | Path) -> list[Record]:
    """The records of a ``metrics.jsonl`` file (or of the one inside a run folder), in file order; none
    for a missing file. An unreadable line (a write cut short) is skipped with a warning."""
    p = Path(path)
    if p.is_dir():
        p = p / METRICS_FILE
    if not p.exists():
        return []
    records = []
    for line in p.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        record = parse_metrics_line(line)
        if record is None:
            logger.warning("%s: skipping an unreadable metrics line (a write cut short?)", p)
            continue
        records.append(record)
    return records


class WandbMirror:
    """Sends each iteration's numbers to Weights & Biases (optional: ``pip install wandb``)."""

    def __init__(self, project: str, run_dir: str | Path, config: dict[str, Any] | None = None) -> None:
        try:
            import wandb
        except ImportError as exc:
            raise ImportError(
                "loop.wandb_project is set but wandb is not installed: pip install wandb, or unset it"
            ) from exc
        run_dir = Path(run_dir)
        self._run = wandb.init(
            project=project,
            name=run_dir.name,
            dir=str(run_dir),
            config=config,
            resume="allow",
            id=run_dir.name.replace(":", "-"),
        )

    def log(self, iteration: int, record: Record) -> None:
        numbers = {k: float(v) for k, v in record.items() if is_number(v) and k != "iteration"}
        self._run.log(numbers, step=iteration)

    def close(self) -> None:
        self._run.finish()


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
