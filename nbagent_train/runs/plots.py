"""Per-iteration metrics of an RL run: what the episodes did, and plots of them.

`episode_metrics` summarizes one iteration's trajectories (reward, success, length, terminations,
tokens); the loop writes it with the training metrics to ``metrics.jsonl`` and TensorBoard
(`nbagent_train.runs.metrics.MetricsLogger`) and, when configured, to wandb (`WandbMirror`); `plot_metrics`
draws ``reward.png`` and ``metrics.png`` from the JSONL file (matplotlib, Agg backend: no display needed);
`plot_training` draws a `fit` / `sft` run's ``training.png``.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from nbagent.trajectory import Trajectory

logger = logging.getLogger("nbagent_train")

METRICS_FILE = "metrics.jsonl"

Record = dict[str, Any]


def episode_metrics(
    trajectories: Sequence[Trajectory], *, success_key: str = "answer", success_threshold: float = 1.0
) -> Record:
    """Reward, success, length, termination and token statistics of one batch of episodes.

    An episode succeeds when its reward breakdown's `success_key` (else its total) reaches
    `success_threshold`. Episodes without a reward count as reward 0 here and in ``unscored``.
    """
    rewards = [t.reward.total if t.reward is not None else 0.0 for t in trajectories]
    n = len(trajectories)
    out: Record = {
        "episodes": n,
        "unscored": sum(1 for t in trajectories if t.reward is None),
        "reward_mean": statistics.fmean(rewards) if rewards else 0.0,
        "reward_std": statistics.pstdev(rewards) if rewards else 0.0,
        "reward_min": min(rewards, default=0.0),
        "reward_max": max(rewards, default=0.0),
        "success_rate": _success_rate(trajectories, success_key, success_threshold),
    }
    parts: dict[str, list[float]] = {}
    for t in trajectories:
        for key, value in (t.reward.breakdown if t.reward is not None else {}).items():
            parts.setdefault(key, []).append(float(value))
    for key, values in sorted(parts.items()):
        out[f"reward/{key}"] = statistics.fmean(values)
    steps = [len(t.steps) for t in trajectories]
    out["steps_mean"] = statistics.fmean(steps) if steps else 0.0
    out["steps_max"] = max(steps, default=0)
    terminations = Counter(t.termination.value for t in trajectories)
    for reason, count in sorted(terminations.items()):
        out[f"termination/{reason}"] = count / n
    prompt = completion = calls = 0
    format_errors = cell_errors = cells = 0
    for t in trajectories:
        for step in t.steps:
            calls += 1
            call = step.model_call
            prompt += (
                len(call.prompt_token_ids) if call.prompt_token_ids is not None else _usage(call, "prompt")
            )
            completion += (
                len(call.completion_token_ids)
                if call.completion_token_ids is not None
                else _usage(call, "completion")
            )
            format_errors += step.action.kind == "format_error"
            if step.cell is not None:
                cells += 1
                cell_errors += not step.cell.ok
    out["tokens/prompt"] = prompt
    out["tokens/completion"] = completion
    out["tokens/completion_per_call"] = completion / calls if calls else 0.0
    out["format_error_rate"] = format_errors / calls if calls else 0.0
    out["cell_error_rate"] = cell_errors / cells if cells else 0.0
    wall = [t.wall_s for t in trajectories]
    out["episode_wall_s_mean"] = statistics.fmean(wall) if wall else 0.0
    return out


def _usage(call: Any, kind: str) -> int:
    usage = call.usage
    if usage is None:
        return 0
    return int(usage.prompt_tokens if kind == "prompt" else usage.completion_tokens)


def _success_rate(trajectories: Sequence[Trajectory], key: str, threshold: float) -> float:
    if not trajectories:
        return 0.0
    hits = 0
    for t in trajectories:
        if t.reward is None:
            continue
        value = t.reward.breakdown.get(key, t.reward.total)
        hits += value >= threshold
    return hits / len(trajectories)


# --------------------------------------------------------------------------------------------------
# Logging
# --------------------------------------------------------------------------------------------------


def read_metrics(path: str | Path) -> list[Record]:
    """The records of a ``metrics.jsonl`` file; a torn line (a kill mid-write) is skipped with a warning."""
    p = Path(path)
    if not p.exists():
        return []
    records = []
    for line in p.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            logger.warning("%s: skipping an unreadable metrics line (a write cut short?)", p)
            continue
        if isinstance(record, dict):
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
        numbers = {k: float(v) for k, v in record.items() if _is_number(v) and k != "iteration"}
        self._run.log(numbers, step=iteration)

    def close(self) -> None:
        self._run.finish()


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# --------------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------------

_PANELS: list[tuple[str, list[str]]] = [
    ("success rate", ["success_rate"]),
    ("reward parts", ["reward/*"]),
    ("steps per episode", ["steps_mean"]),
    ("terminations (share)", ["termination/*"]),
    ("tokens per iteration", ["tokens/prompt", "tokens/completion"]),
    ("error rates", ["format_error_rate", "cell_error_rate"]),
    ("phase times (s)", ["time/rollout_s", "time/train_s", "time/publish_s", "time/checkpoint_s"]),
    ("policy loss", ["train/loss"]),
    ("KL / entropy", ["train/kl", "train/entropy"]),
]


def _series(records: Sequence[Record], pattern: str) -> dict[str, tuple[list[int], list[float]]]:
    keys: Iterable[str]
    if pattern.endswith("*"):
        prefix = pattern[:-1]
        keys = sorted({k for r in records for k in r if k.startswith(prefix)})
    else:
        keys = [pattern]
    out = {}
    for key in keys:
        points = [(int(r["iteration"]), float(r[key])) for r in records if _is_number(r.get(key))]
        if points:
            out[key] = ([p[0] for p in points], [p[1] for p in points])
    return out


def rolling_mean(values: Sequence[float], window: int) -> list[float]:
    """Trailing mean over up to `window` values (shorter at the start)."""
    out = []
    for i in range(len(values)):
        chunk = values[max(0, i - window + 1) : i + 1]
        out.append(sum(chunk) / len(chunk))
    return out


_TRAINING_PANELS: list[tuple[str, list[str]]] = [
    ("loss", ["loss"]),
    ("perplexity", ["perplexity"]),
    ("learning rate", ["lr"]),
    ("gradient norm", ["grad_norm"]),
    ("tokens per second", ["tokens_per_s"]),
    ("KL / entropy", ["kl", "entropy"]),
]


def _draw_panels(records: Sequence[Record], panels: list[tuple[str, list[str]]], path: Path) -> Path:
    """One subplot per panel (3 columns), each with the series its patterns match; saved to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = math.ceil(len(panels) / 3)
    fig, axes = plt.subplots(rows, 3, figsize=(14, 10 * rows / 3), squeeze=False)
    for ax, (title, patterns) in zip(axes.flat, panels, strict=True):
        drawn = False
        for pattern in patterns:
            for key, (x, y) in _series(records, pattern).items():
                ax.plot(x, y, marker=".", label=key)
                drawn = True
        ax.set_title(title)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_training(run_dir: str | Path) -> Path | None:
    """Draw ``training.png`` (loss, perplexity, lr, gradient norm, speed) of a `fit` or `sft` run folder
    from its ``metrics.jsonl``; None when there is no record yet."""
    run = Path(run_dir)
    records = sorted(read_metrics(run / METRICS_FILE), key=lambda r: int(r["iteration"]))
    return _draw_panels(records, _TRAINING_PANELS, run / "training.png") if records else None


def plot_metrics(run_dir: str | Path, *, window: int = 5) -> list[Path]:
    """Draw ``reward.png`` (mean, std band, rolling mean) and ``metrics.png`` from ``metrics.jsonl``.

    Returns the files written (none when there is no record yet).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = Path(run_dir)
    records = sorted(read_metrics(run / METRICS_FILE), key=lambda r: int(r["iteration"]))
    if not records:
        return []
    written = []
    its = [int(r["iteration"]) for r in records]
    mean = [float(r.get("reward_mean", 0.0)) for r in records]
    std = [float(r.get("reward_std", 0.0)) for r in records]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.fill_between(
        its,
        [m - s for m, s in zip(mean, std, strict=True)],
        [m + s for m, s in zip(mean, std, strict=True)],
        alpha=0.2,
        label="± std",
    )
    ax.plot(its, mean, marker="o", markersize=3, label="reward mean")
    ax.plot(its, rolling_mean(mean, window), linewidth=2, label=f"rolling mean ({window})")
    ax.set_xlabel("iteration")
    ax.set_ylabel("training reward")
    ax.set_title(f"{run.name}: training reward")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = run / "reward.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)

    written.append(_draw_panels(records, _PANELS, run / "metrics.png"))
    return written
