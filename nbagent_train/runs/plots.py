"""Plots of a run folder's ``metrics.jsonl`` (matplotlib, Agg backend: no display needed).

`plot_metrics` draws an RL run's ``reward.png`` and ``metrics.png``; `plot_training` draws a `fit` /
`sft` run's ``training.png``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

from nbagent_train.runs.metrics import METRICS_FILE, Record, is_number, read_metrics

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
        points = [(int(r["iteration"]), float(r[key])) for r in records if is_number(r.get(key))]
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
