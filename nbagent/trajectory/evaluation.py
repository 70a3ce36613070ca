"""Accuracy tables from scored trajectories: per dataset, means of the reward breakdown and pass@k.

Everything is computed from what the environment's scorers wrote into each trajectory's reward, so a
table is comparable across models as long as the same environment scored them. An episode counts as
solved when its breakdown value for the success metric (``exact_match`` by default) reaches the
threshold; an episode that could not be scored counts as unsolved.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from math import comb
from statistics import fmean
from typing import Any

from pydantic import BaseModel, Field

from nbagent.trajectory.schema import Termination, Trajectory

__all__ = ["DatasetMetrics", "EvalReport", "evaluate", "pass_at_k", "render_report", "solved"]

SHOWN_METRICS = {"exact_match": "EM", "f1": "F1", "judge_correct": "judge"}
"""Breakdown keys shown as table columns, in this order, when the trajectories have them."""


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k estimate for one task with `n` samples of which `c` are correct.

    The chance that at least one of `k` samples drawn without replacement from the `n` is correct:
    ``1 - C(n-c, k) / C(n, k)``.
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    return 1.0 - comb(n - c, k) / comb(n, k)


class DatasetMetrics(BaseModel):
    """One row of the table."""

    dataset: str
    tasks: int
    episodes: int
    k: int
    """Samples per task used for pass@k (the smallest count any task has)."""
    metrics: dict[str, float] = Field(default_factory=dict)
    """Mean of every reward breakdown key over the scored episodes."""
    reward_mean: float | None = None
    pass_at_k: float | None = None
    mean_at_k: float | None = None
    """Mean share of solved samples per task."""
    unscored: int = 0
    terminations: dict[str, int] = Field(default_factory=dict)


class EvalReport(BaseModel):
    """The table: one row per dataset and an ``all`` row."""

    success_metric: str
    threshold: float
    rows: list[DatasetMetrics]

    def row(self, dataset: str) -> DatasetMetrics:
        for row in self.rows:
            if row.dataset == dataset:
                return row
        raise KeyError(dataset)


def _dataset_of(traj: Trajectory) -> str:
    dataset = traj.task.metadata.get("dataset")
    return str(dataset) if dataset else traj.environment or "unknown"


def solved(traj: Trajectory, metric: str, threshold: float = 1.0) -> bool:
    """Whether an episode counts as solved: its reward breakdown's `metric` (or the total, for
    ``"total"``) reaches `threshold`. Unscored episodes and a missing breakdown key are unsolved.

    The one rule for success: evaluation tables, the RL loop's ``success_rate`` and SFT selection use it.
    """
    if traj.reward is None:
        return False
    value = traj.reward.total if metric == "total" else traj.reward.breakdown.get(metric)
    return value is not None and value >= threshold


def _row(name: str, trajs: Sequence[Trajectory], metric: str, threshold: float) -> DatasetMetrics:
    by_task: dict[str, list[Trajectory]] = defaultdict(list)
    for traj in trajs:
        by_task[traj.task.id].append(traj)
    rewards = [t.reward for t in trajs if t.reward is not None]
    keys = sorted({key for r in rewards for key in r.breakdown})
    metrics = {key: fmean(r.breakdown[key] for r in rewards if key in r.breakdown) for key in keys}
    k = min(len(group) for group in by_task.values())
    counts = {task: sum(solved(t, metric, threshold) for t in group) for task, group in by_task.items()}
    terminations: dict[str, int] = defaultdict(int)
    for traj in trajs:
        terminations[Termination(traj.termination).value] += 1
    return DatasetMetrics(
        dataset=name,
        tasks=len(by_task),
        episodes=len(trajs),
        k=k,
        metrics=metrics,
        reward_mean=fmean(r.total for r in rewards) if rewards else None,
        pass_at_k=fmean(pass_at_k(len(by_task[task]), c, k) for task, c in counts.items()),
        mean_at_k=fmean(c / len(by_task[task]) for task, c in counts.items()),
        unscored=len(trajs) - len(rewards),
        terminations=dict(terminations),
    )


def evaluate(
    trajectories: Iterable[Trajectory], *, success_metric: str = "exact_match", threshold: float = 1.0
) -> EvalReport:
    """The per-dataset table of `trajectories` (the dataset is ``task.metadata["dataset"]``, else the
    environment name), plus an ``all`` row when there are several datasets.

    `success_metric` is a reward breakdown key, or ``"total"`` for the reward total.
    """
    by_dataset: dict[str, list[Trajectory]] = defaultdict(list)
    for traj in trajectories:
        by_dataset[_dataset_of(traj)].append(traj)
    rows = [_row(name, trajs, success_metric, threshold) for name, trajs in sorted(by_dataset.items())]
    if len(rows) > 1:
        rows.append(_row("all", [t for ts in by_dataset.values() for t in ts], success_metric, threshold))
    return EvalReport(success_metric=success_metric, threshold=threshold, rows=rows)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def render_report(report: EvalReport, console: Any = None) -> None:
    """Print `report` as a rich table (percentages)."""
    from rich.console import Console
    from rich.table import Table

    shown = [key for key in SHOWN_METRICS if any(key in row.metrics for row in report.rows)]
    k = min((row.k for row in report.rows), default=1)
    table = Table(title=f"accuracy (%), solved = {report.success_metric} >= {report.threshold:g}")
    for column in ["dataset", "tasks", "episodes", *[SHOWN_METRICS[key] for key in shown]]:
        table.add_column(column, justify="left" if column == "dataset" else "right")
    for column in [f"pass@{k}", f"mean@{k}", "reward", "unscored"]:
        table.add_column(column, justify="right")
    for row in report.rows:
        table.add_row(
            row.dataset,
            str(row.tasks),
            str(row.episodes),
            *[_fmt(row.metrics.get(key)) for key in shown],
            _fmt(row.pass_at_k),
            _fmt(row.mean_at_k),
            "-" if row.reward_mean is None else f"{row.reward_mean:.3f}",
            str(row.unscored),
        )
    (console or Console()).print(table)
