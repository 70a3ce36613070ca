"""What a collection did (`CollectSummary`) and its progress bar."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from nbagent.rollout.episode import FAILED_TERMINATIONS
from nbagent.trajectory import Trajectory

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID


@dataclass
class CollectSummary:
    """What a collection did."""

    out: Path
    planned: int
    """Pairs asked for (tasks x samples)."""
    skipped: int
    """Pairs already in the file when resuming."""
    written: int = 0
    failed: int = 0
    """Written episodes that ended in error or timeout, or could not be scored."""
    reward_sum: float = 0.0
    scored: int = 0
    terminations: Counter[str] = field(default_factory=Counter)
    wall_s: float = 0.0
    truncated_bytes: int = 0
    corrupt_lines: int = 0

    @property
    def reward_mean(self) -> float | None:
        return self.reward_sum / self.scored if self.scored else None

    @property
    def episodes_per_s(self) -> float:
        return self.written / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def complete(self) -> bool:
        """True when every planned pair is now in the file."""
        return self.skipped + self.written == self.planned

    def add(self, traj: Trajectory) -> None:
        self.written += 1
        self.terminations[traj.termination.value] += 1
        if traj.termination in FAILED_TERMINATIONS or "score_error" in traj.metadata:
            self.failed += 1
        if traj.reward is not None:
            self.scored += 1
            self.reward_sum += traj.reward.total


class ProgressView:
    """A rich progress bar of done / failed / reward mean / rate, or nothing."""

    def __init__(self, summary: CollectSummary, enabled: bool) -> None:
        self.summary = summary
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._started = time.monotonic()
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("[bold]collect"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[status]}"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
            )
            self._task = self._progress.add_task(
                "collect", total=summary.planned, completed=summary.skipped, status=self._status()
            )

    def _status(self) -> str:
        s = self.summary
        mean = "-" if s.reward_mean is None else f"{s.reward_mean:.3f}"
        rate = s.written / max(time.monotonic() - self._started, 1e-9)
        return f"failed {s.failed} · reward {mean} · {rate:.2f} ep/s"

    def update(self) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, advance=1, status=self._status())

    def __enter__(self) -> ProgressView:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
