"""`nbagent-train fit`: trajectory files in, trained and servable weights out.

The run folder (``--out``) holds ``config.yaml`` (resolved), ``build_summary.json``, ``metrics.jsonl``,
``tb/`` (TensorBoard), ``training.png`` (the curves, redrawn at each checkpoint),
``checkpoints/step-NNNNNN/`` (resumable) and ``final/`` (a LoRA adapter folder or a full HF checkpoint;
``final-merged/`` too with ``export_merged``), and ``result.json`` naming them.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from nbagent.trajectory import CorruptTrajectoryError, Trajectory, read_trajectories
from nbagent_train.backends import ExportResult, TrainerBackend, create_backend
from nbagent_train.config.base import TrainConfig
from nbagent_train.config.loading import dump_config
from nbagent_train.errors import CheckpointError, SampleBuildError, TrainConfigError
from nbagent_train.objective.advantages import compute_advantages, group_episodes
from nbagent_train.objective.samples import Sample, SampleSet, build_samples
from nbagent_train.runs.folder import BUILD_SUMMARY, CONFIG_FILE, RunFolder
from nbagent_train.runs.metrics import MetricsLogger
from nbagent_train.runs.plots import plot_training


def load_trajectories(paths: list[Path]) -> list[Trajectory]:
    """All trajectories of the given JSONL files, in order; a missing file, a corrupt line or no trajectory at
    all is an error."""
    if not paths:
        raise TrainConfigError("trajectories: no trajectory file given; pass --trajectories FILE.jsonl")
    out: list[Trajectory] = []
    for path in paths:
        if not Path(path).is_file():
            raise TrainConfigError(f"trajectories: {path} does not exist or is not a file")
        try:
            out.extend(read_trajectories(path))
        except CorruptTrajectoryError as exc:
            raise SampleBuildError(str(exc)) from exc
    if not out:
        names = ", ".join(str(p) for p in paths)
        raise SampleBuildError(
            f"trajectories: {names} holds no trajectories; record some with `nbagent collect`"
        )
    return out


def load_tokenizer(config: TrainConfig) -> Any:
    """The policy tokenizer (used only to re-tokenize steps recorded without ids)."""
    from transformers import AutoTokenizer

    name = config.tokenizer or config.model
    try:
        return AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as exc:
        raise TrainConfigError(f"tokenizer: cannot load a tokenizer from {name!r}: {exc}") from exc


@dataclass
class FitResult:
    out: Path
    iterations: int
    global_step: int
    exports: list[ExportResult] = field(default_factory=list)
    resumed_from: Path | None = None


@dataclass
class Position:
    """Where a run is: epoch, batch within it, and iteration (batches done, 1-based)."""

    epoch: int = 0
    batch: int = 0
    iteration: int = 0


class FitRun:
    """One offline training run; `run()` does everything, the pieces are public for reuse.

    Subclasses (`nbagent_train.sft.SFTRun`) change what is kept (`select`), the batch unit (`batch_units`),
    one batch's update (`train_batch`) and the progress line (`format_metrics`)."""

    name = "fit"
    """The command's name, shown on the progress bar."""

    def __init__(self, config: TrainConfig, *, resume: bool = False, console: Console | None = None) -> None:
        if config.out is None:
            raise TrainConfigError("out: no output folder given; pass --out DIR")
        self.config = config.model_copy(update={"model": config.resolved_model()})
        self.out = Path(config.out)
        self.resume = resume
        self.console = console or Console()

    # -- data --------------------------------------------------------------------------------------------

    def build(self) -> SampleSet:
        """Samples of the trajectory files; an error (before any model is loaded) when there are none."""
        trajectories = self.select(load_trajectories(list(self.config.trajectories)))
        tokenizer = load_tokenizer(self.config)
        sample_set = build_samples(trajectories, self.config.samples, tokenizer)
        if not sample_set.samples:
            self.console.print(sample_set.summary.as_table())
            raise SampleBuildError("no training samples were built; see the build summary above")
        return sample_set

    def select(self, trajectories: list[Trajectory]) -> list[Trajectory]:
        """The trajectories to train on (`fit`: all of them)."""
        return trajectories

    def batch_units(self, sample_set: SampleSet) -> list[str]:
        """The ids batches are made of (`fit`: task groups, which advantages are computed within)."""
        return list(group_episodes(sample_set.episodes))

    def batches(self, sample_set: SampleSet, epoch: int) -> list[list[str]]:
        """Unit ids of each batch of `epoch` (units shuffled with a per-epoch seed)."""
        units = self.batch_units(sample_set)
        random.Random(self.config.run.seed * 1_000_003 + epoch).shuffle(units)
        size = self.config.run.batch_groups or len(units) or 1
        return [units[i : i + size] for i in range(0, len(units), size)]

    def _schedule(self, sample_set: SampleSet) -> Iterator[tuple[Position, list[str]]]:
        """The batches to train, in order, up to the one that reaches `run.max_steps`."""
        run = self.config.run
        per_batch = run.mini_batches * run.ppo_epochs
        iteration = 0
        for epoch in range(run.epochs):
            for b, groups in enumerate(self.batches(sample_set, epoch)):
                if run.max_steps is not None and iteration * per_batch >= run.max_steps:
                    return
                iteration += 1
                yield Position(epoch, b, iteration), groups

    def total_optimizer_steps(self, sample_set: SampleSet) -> int:
        run = self.config.run
        per_batch = run.mini_batches * run.ppo_epochs
        total = sum(len(self.batches(sample_set, e)) for e in range(run.epochs)) * per_batch
        return min(total, run.max_steps) if run.max_steps else total

    # -- the run -----------------------------------------------------------------------------------------

    def _prepare_out(self) -> Path | None:
        existing = RunFolder(self.out).checkpoints()
        if existing and not self.resume:
            raise CheckpointError(
                f"{self.out} already holds checkpoints of a run; pass --resume to continue it, "
                "or choose another --out"
            )
        self.out.mkdir(parents=True, exist_ok=True)
        return existing[-1] if existing and self.resume else None

    def run(self) -> FitResult:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        sample_set = self.build()
        checkpoint = self._prepare_out()
        backend = create_backend(self.config)
        main = True
        try:
            backend.setup(total_steps=self.total_optimizer_steps(sample_set))
            main = backend.is_main_process
            if main:
                self.console.print(sample_set.summary.as_table())
                dump_config(self.config, self.out / CONFIG_FILE)
                (self.out / BUILD_SUMMARY).write_text(json.dumps(sample_set.summary.to_dict(), indent=2))
            backend.preflight(sample_set.samples)
            position = Position()
            if checkpoint is not None:
                position = Position(**backend.load(checkpoint)["position"])
                if main:
                    self.console.print(f"resumed from {checkpoint} (iteration {position.iteration})")
            logger = (
                MetricsLogger(
                    self.out, tensorboard=self.config.run.tensorboard and main, keep_until=position.iteration
                )
                if main
                else None
            )
            schedule = list(self._schedule(sample_set))
            label = TextColumn(f"[bold]{self.name}")
            columns = (label, BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
            with Progress(*columns, console=self.console, disable=not main) as progress:
                task = progress.add_task(self.name, total=len(schedule), completed=position.iteration)
                last = position
                for pos, groups in schedule:
                    if pos.iteration <= position.iteration:
                        continue
                    if self._max_steps_reached(backend):
                        break
                    metrics = self.train_batch(backend, sample_set, pos, groups)
                    last = pos
                    if metrics is not None and logger is not None:
                        metrics |= {"epoch": float(pos.epoch), "global_step": float(backend.global_step)}
                        logger.log(pos.iteration, metrics)
                        progress.console.print(self.format_metrics(pos.iteration, len(schedule), metrics))
                    progress.update(task, completed=pos.iteration)
                    every = self.config.run.save_every
                    if every and pos.iteration % every == 0:
                        self.checkpoint(backend, pos)
            if logger is not None:
                logger.close()
            self.checkpoint(backend, last)
            exports = self.export(backend)
            if main:
                result = {
                    "iterations": last.iteration,
                    "global_step": backend.global_step,
                    "exports": [
                        {"path": str(e.path), "kind": e.kind, "base_model": e.base_model} for e in exports
                    ],
                }
                (self.out / "result.json").write_text(json.dumps(result, indent=2))
                for e in exports:
                    self.console.print(f"[green]saved[/] {e.kind} weights to {e.path}")
            return FitResult(self.out, last.iteration, backend.global_step, exports, checkpoint)
        finally:
            backend.close()

    def _max_steps_reached(self, backend: TrainerBackend) -> bool:
        limit = self.config.run.max_steps
        return limit is not None and backend.global_step >= limit

    def train_batch(
        self, backend: TrainerBackend, sample_set: SampleSet, pos: Position, groups: list[str]
    ) -> dict[str, float] | None:
        """Advantages within each group of the batch, then one `backend.step`; None when nothing was left
        to train on."""
        wanted = set(groups)
        episodes = [e for e in sample_set.episodes if e.group_id in wanted]
        samples: list[Sample] = [s for s in sample_set.samples if s.group_id in wanted]
        rng = random.Random(f"{self.config.run.seed}:{pos.epoch}:{pos.batch}")
        adv = compute_advantages(samples, episodes, self.config.advantage, rng)
        if not adv.samples:
            if backend.is_main_process:
                self.console.print(
                    f"[yellow]iteration {pos.iteration}: no samples left after dynamic sampling "
                    f"({adv.groups_dropped} of {adv.groups} groups had equal rewards); skipped[/]"
                )
            return None
        return backend.step(adv.samples) | adv.stats

    def format_metrics(self, iteration: int, total: int, metrics: dict[str, float]) -> str:
        return format_metrics(iteration, total, metrics)

    def checkpoint(self, backend: TrainerBackend, pos: Position) -> Path:
        path = RunFolder(self.out).checkpoint(pos.iteration)
        backend.save(path, {"position": {"epoch": pos.epoch, "batch": pos.batch, "iteration": pos.iteration}})
        if backend.is_main_process:
            for old in RunFolder(self.out).checkpoints()[: -self.config.run.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
            plot_training(self.out)
        return path

    def export(self, backend: TrainerBackend) -> list[ExportResult]:
        exports = [backend.export(self.out / "final")]
        if backend.is_lora and self.config.export_merged:
            exports.append(backend.export(self.out / "final-merged", merged=True))
        return exports


def format_metrics(iteration: int, total: int, m: dict[str, float]) -> str:
    """One human-readable line of the most watched metrics."""
    parts = [
        f"iter {iteration}/{total}",
        f"step {int(m.get('global_step', 0))}",
        f"loss {m.get('loss', 0.0):+.4f}",
        f"kl {m.get('kl', 0.0):.4f}",
        f"clip {m.get('clip_frac', 0.0):.3f}",
        f"reward {m.get('reward_mean', 0.0):.3f}±{m.get('reward_std', 0.0):.3f}",
        f"adv {m.get('advantage_mean', 0.0):+.3f}±{m.get('advantage_std', 0.0):.3f}",
        f"tok/s {m.get('tokens_per_s', 0.0):.0f}",
    ]
    if "entropy" in m:
        parts.append(f"ent {m['entropy']:.3f}")
    return "  ".join(parts)


def fit(config: TrainConfig, *, resume: bool = False, console: Console | None = None) -> FitResult:
    """Run `nbagent-train fit` from Python."""
    return FitRun(config, resume=resume, console=console).run()
