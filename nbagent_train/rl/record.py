"""One iteration's record (`IterationRecord`), its line in `metrics.jsonl`, and where records go."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbagent_train.errors import TrainError

if TYPE_CHECKING:
    from nbagent_train.config.rl import RLConfig


@dataclass
class PhaseTimes:
    """Seconds one iteration spent in each phase."""

    rollout_s: float = 0.0
    train_s: float = 0.0
    publish_s: float = 0.0
    checkpoint_s: float = 0.0
    iteration_s: float = 0.0
    """From the end of the previous iteration to the end of this one (overlapping phases count once)."""


@dataclass
class IterationRecord:
    """What one iteration did: the batch it trained on, the update, and where the time went."""

    iteration: int
    policy_version: int
    """The version that sampled the batch."""
    staleness: int
    """How many versions the batch lags the policy it trained."""
    stale_dropped: int
    episodes_collected: int
    """Episodes this process collected (the rest were already in the file: a resumed collection)."""
    episodes: dict[str, float] = field(default_factory=dict)
    """`nbagent_train.runs.episodes.episode_metrics` of the fresh episodes."""
    advantage: dict[str, float] = field(default_factory=dict)
    samples: int = 0
    update: dict[str, float] = field(default_factory=dict)
    """The backend's step metrics (empty when nothing was trained)."""
    times: PhaseTimes = field(default_factory=PhaseTimes)
    wall_s: float = 0.0
    """Seconds of the run so far, across resumes."""

    @property
    def reward_mean(self) -> float:
        return float(self.episodes.get("reward_mean", 0.0))

    def metrics(self) -> dict[str, Any]:
        """The record as the flat ``metrics.jsonl`` line (the logger adds ``iteration`` and ``time``)."""
        return {
            "policy_version": self.policy_version,
            "staleness": self.staleness,
            "stale_dropped": self.stale_dropped,
            "episodes_collected": self.episodes_collected,
            **self.episodes,
            **{f"advantage/{k}": v for k, v in self.advantage.items()},
            "samples": self.samples,
            **{f"update/{k}": v for k, v in self.update.items()},
            **{f"time/{k}": v for k, v in vars(self.times).items()},
            "wall_s": self.wall_s,
        }

    def summary_line(self, total: int) -> str:
        """One line per iteration: reward, success, length and where the time went."""
        e = self.episodes
        return "  ".join(
            [
                f"iter {self.iteration}/{total}",
                f"v{self.policy_version}",
                f"reward {e['reward_mean']:.3f}±{e['reward_std']:.3f}",
                f"success {e['success_rate']:.2f}",
                f"steps {e['steps_mean']:.1f}",
                f"loss {self.update.get('loss', 0.0):+.4f}",
                f"rollout {self.times.rollout_s:.1f}s",
                f"train {self.times.train_s:.1f}s",
                f"publish {self.times.publish_s:.1f}s",
            ]
        )


def reward_trend(records: Sequence[IterationRecord], window: int) -> tuple[float, float]:
    """Mean training reward of the first and of the last `window` iterations."""
    if not records:
        raise TrainError("no iterations recorded yet")
    rewards = [r.reward_mean for r in sorted(records, key=lambda r: r.iteration)]
    window = max(1, min(window, len(rewards) // 2 or 1))
    return statistics.fmean(rewards[:window]), statistics.fmean(rewards[-window:])


class RunLog:
    """Where each iteration's record goes: ``metrics.jsonl`` and TensorBoard, and wandb when configured."""

    def __init__(self, root: Path, config: RLConfig, start: int) -> None:
        from nbagent_train.runs.metrics import MetricsLogger, WandbMirror

        self._wandb = None
        if config.loop.wandb_project:
            self._wandb = WandbMirror(config.loop.wandb_project, root, config.model_dump(mode="json"))
        self._log = MetricsLogger(root, tensorboard=config.loop.tensorboard, keep_until=start)

    def log(self, record: IterationRecord) -> None:
        metrics = record.metrics()
        self._log.log(record.iteration, metrics)
        if self._wandb is not None:
            self._wandb.log(record.iteration, metrics)

    def close(self) -> None:
        self._log.close()
        if self._wandb is not None:
            self._wandb.close()


@dataclass
class RLResult:
    """What a finished (or stopped) run did."""

    run_dir: Path
    iterations_done: int
    policy_version: int
    wall_s: float
    records: list[IterationRecord] = field(default_factory=list)
