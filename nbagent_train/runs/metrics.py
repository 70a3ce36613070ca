"""Per-step metrics to `metrics.jsonl` (one JSON object per line) and TensorBoard."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"


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
            kept = [line for line in self.path.read_text().splitlines() if _iteration(line) <= keep_until]
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


def _iteration(line: str) -> int:
    try:
        return int(json.loads(line).get("iteration", 0))
    except (ValueError, AttributeError, TypeError):
        return 0


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl file (or of the one inside a run folder)."""
    p = Path(path)
    if p.is_dir():
        p = p / METRICS_FILE
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
