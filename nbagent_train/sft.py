"""`nbagent-train sft`: supervised fine-tuning on the episodes that went well.

The distillation path (collect with any endpoint, keep what succeeded, fine-tune) and the warm start of
`nbagent-train rl` (``lora.init_adapter: RUN/final``). It is `fit` with three changes: episodes are
selected first (`SelectConfig`), every episode is its own batch unit (no groups, no advantages), and the
backend trains the token-mean negative log-likelihood of the completion tokens (``objective: sft``).
The run folder has `fit`'s layout, plus ``selection.json`` (what each filter dropped).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from rich.console import Console

from nbagent.trajectory import Trajectory
from nbagent.trajectory.evaluation import solved
from nbagent_train.backends import TrainerBackend
from nbagent_train.config.sft import SelectConfig, SFTConfig
from nbagent_train.errors import SampleBuildError, TrainConfigError
from nbagent_train.fit import FitResult, FitRun, Position
from nbagent_train.objective.samples import SampleSet


@dataclass
class SelectionSummary:
    """How many episodes each filter of `SelectConfig` dropped."""

    read: int = 0
    termination: int = 0
    min_reward: int = 0
    success_key: int = 0
    duplicates: int = 0
    kept: int = 0

    def rows(self, select: SelectConfig) -> list[tuple[str, str]]:
        """(label, value) pairs of the filters in effect, in the order they apply."""
        rows = [("episodes read", str(self.read))]
        if select.terminations is not None:
            terms = " / ".join(select.terminations)
            rows.append((f"  dropped: termination not {terms}", str(self.termination)))
        if select.min_reward is not None:
            rows.append((f"  dropped: reward below {select.min_reward}", str(self.min_reward)))
        if select.success_key is not None:
            rows.append((f"  dropped: {select.success_key} below 1.0", str(self.success_key)))
        if select.dedupe:
            rows.append(("  dropped: duplicates", str(self.duplicates)))
        return [*rows, ("episodes kept", str(self.kept))]

    def as_table(self, select: SelectConfig) -> Any:
        """A `rich.table.Table` of `rows()`."""
        from rich.table import Table

        table = Table(title="Episode selection", show_header=False)
        table.add_column("what", style="bold")
        table.add_column("count", justify="right")
        for label, value in self.rows(select):
            table.add_row(label, value)
        return table


def _dedupe_key(traj: Trajectory) -> tuple[str, tuple[str, ...]]:
    return traj.task.id, tuple(step.model_call.completion for step in traj.steps)


def select_episodes(
    trajectories: list[Trajectory], select: SelectConfig
) -> tuple[list[Trajectory], SelectionSummary]:
    """The episodes `select` keeps, in order, and what each filter dropped."""
    summary = SelectionSummary(read=len(trajectories))
    key = select.success_key
    if key is not None and trajectories:
        seen = {k for t in trajectories if t.reward is not None for k in t.reward.breakdown}
        if key not in seen:
            known = ", ".join(sorted(seen)) or "none"
            raise TrainConfigError(
                f"select.success_key: no episode's reward breakdown has {key!r} (keys found: {known})"
            )
    wanted = None if select.terminations is None else {str(t) for t in select.terminations}
    kept: list[Trajectory] = []
    seen_keys: set[tuple[str, tuple[str, ...]]] = set()
    for traj in trajectories:
        reward = traj.reward
        if wanted is not None and str(traj.termination) not in wanted:
            summary.termination += 1
        elif select.min_reward is not None and (reward is None or reward.total < select.min_reward):
            summary.min_reward += 1
        elif key is not None and not solved(traj, key):
            summary.success_key += 1
        elif select.dedupe and _dedupe_key(traj) in seen_keys:
            summary.duplicates += 1
        else:
            seen_keys.add(_dedupe_key(traj))
            kept.append(traj)
    summary.kept = len(kept)
    return kept, summary


def format_sft_metrics(iteration: int, total: int, m: dict[str, float]) -> str:
    """One human-readable line of an `sft` batch."""
    return "  ".join(
        [
            f"iter {iteration}/{total}",
            f"step {int(m.get('global_step', 0))}",
            f"loss {m.get('loss', 0.0):.4f}",
            f"ppl {m.get('perplexity', 0.0):.2f}",
            f"tokens {int(m.get('scored_tokens', 0))}",
            f"tok/s {m.get('tokens_per_s', 0.0):.0f}",
            f"lr {m.get('lr', 0.0):.2e}",
        ]
    )


class SFTRun(FitRun):
    """One `nbagent-train sft` run: `FitRun` on the selected episodes, one episode per batch unit."""

    name = "sft"

    def __init__(self, config: SFTConfig, *, resume: bool = False, console: Console | None = None) -> None:
        super().__init__(config, resume=resume, console=console)
        self.select_config = config.select

    def select(self, trajectories: list[Trajectory]) -> list[Trajectory]:
        kept, summary = select_episodes(trajectories, self.select_config)
        self.console.print(summary.as_table(self.select_config))
        if not kept:
            raise SampleBuildError(
                f"select: none of the {summary.read} episodes passed the filters (termination dropped "
                f"{summary.termination}, min_reward {summary.min_reward}, success_key {summary.success_key}, "
                f"duplicates {summary.duplicates}); loosen select.terminations / min_reward / success_key"
            )
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "selection.json").write_text(json.dumps(asdict(summary), indent=2))
        return kept

    def batch_units(self, sample_set: SampleSet) -> list[str]:
        return [e.episode_id for e in sample_set.episodes]

    def train_batch(
        self, backend: TrainerBackend, sample_set: SampleSet, pos: Position, groups: list[str]
    ) -> dict[str, float] | None:
        """One `backend.step` on every sample of the batch's episodes (no advantages)."""
        wanted = set(groups)
        samples = [s for s in sample_set.samples if s.episode_id in wanted]
        return backend.step(samples) if samples else None

    def format_metrics(self, iteration: int, total: int, metrics: dict[str, float]) -> str:
        return format_sft_metrics(iteration, total, metrics)


def sft(config: SFTConfig, *, resume: bool = False, console: Console | None = None) -> FitResult:
    """Run `nbagent-train sft` from Python."""
    return SFTRun(config, resume=resume, console=console).run()
