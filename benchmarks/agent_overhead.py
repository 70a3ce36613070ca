"""Per-step cost of the agent loop: nbagent next to smolagents' CodeAgent on the same scripted actions.

A zero-latency scripted model plays a 10-step episode (9 steps of one cell kind, then the final answer)
for three cell kinds: a trivial print, a pure-Python loop of 10^6 iterations, and a numpy reduction.
nbagent runs the code in a real Jupyter kernel (started before timing; the episode's own tool and
notepad set-up is included); smolagents runs it in its local Python executor (an AST interpreter in the
same process). Both run here, in the same process, one after the other, `--repeats` times; the table
shows the median per-step time and the ratio nbagent / smolagents (below 1 means nbagent is faster).

    .venv/bin/python benchmarks/agent_overhead.py [--repeats 3] [--cells trivial numpy]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import time
from typing import Any

from rich.console import Console
from rich.table import Table

from nbagent.agent.agent import Agent
from nbagent.kernel import Kernel
from nbagent.models.testing import ScriptedModel
from nbagent.trajectory import Termination

STEPS = 10
CELLS = {
    "trivial print": "print('hello')",
    "python loop 1e6": "total = 0\nfor i in range(1_000_000):\n    total += i\nprint(total)",
    "numpy reduction": "import numpy as np\nprint(float(np.arange(1_000_000, dtype=np.float64).sum()))",
}


def nbagent_script(code: str) -> list[str]:
    step = f"<think>Run the cell.</think>\n<code>\n{code}\n</code>"
    return [step] * (STEPS - 1) + ["<think>Done.</think>\n<code>\nsubmit_final_answer('done')\n</code>"]


def smolagents_script(code: str) -> list[str]:
    step = f"Thought: Run the cell.\n<code>\n{code}\n</code>"
    return [step] * (STEPS - 1) + ["Thought: Done.\n<code>\nfinal_answer('done')\n</code>"]


async def time_nbagent(code: str, kernel: Kernel) -> float:
    """Seconds per step of one nbagent episode on an already started kernel."""
    agent = Agent(ScriptedModel(nbagent_script(code)), max_steps=STEPS, episode_timeout_s=None)
    t0 = time.perf_counter()
    result = await agent.run("Run the cells.", kernel=kernel)
    elapsed = time.perf_counter() - t0
    if result.termination is not Termination.SUBMITTED or len(result.steps) != STEPS:
        raise RuntimeError(f"nbagent episode ended with {result.termination}: {result.error}")
    failed = [s.index for s in result.steps if s.cell is None or not s.cell.ok]
    if failed:
        raise RuntimeError(f"nbagent cells failed at steps {failed}: {result.steps[failed[0]].observation}")
    return elapsed / STEPS


def time_smolagents(code: str) -> float:
    """Seconds per step of one smolagents CodeAgent episode (local executor)."""
    from smolagents import CodeAgent
    from smolagents.models import ChatMessage, MessageRole, Model

    class Scripted(Model):  # type: ignore[misc]
        def __init__(self, replies: list[str]) -> None:
            super().__init__(model_id="scripted")
            self.replies = list(replies)

        def generate(self, messages: list[Any], stop_sequences: Any = None, **kwargs: Any) -> Any:
            return ChatMessage(role=MessageRole.ASSISTANT, content=self.replies.pop(0))

    agent = CodeAgent(
        tools=[],
        model=Scripted(smolagents_script(code)),
        max_steps=STEPS,
        additional_authorized_imports=["numpy"],
    )
    agent.logger.level = -1  # silence its console output
    t0 = time.perf_counter()
    answer = agent.run("Run the cells.")
    elapsed = time.perf_counter() - t0
    steps = [s for s in agent.memory.steps if type(s).__name__ == "ActionStep"]
    errors = [s.error for s in steps if getattr(s, "error", None)]
    if answer != "done" or len(steps) != STEPS or errors:
        raise RuntimeError(f"smolagents episode: answer {answer!r}, {len(steps)} steps, errors {errors[:1]}")
    return elapsed / STEPS


async def main(repeats: int, cells: dict[str, str]) -> None:
    logging.getLogger("smolagents").setLevel(logging.ERROR)
    rows = []
    async with Kernel() as kernel:
        await time_nbagent("print(1)", kernel)  # warm-up: imports, first cell
        time_smolagents("print(1)")
        for name, code in cells.items():
            ours = [await time_nbagent(code, kernel) for _ in range(repeats)]
            theirs = [time_smolagents(code) for _ in range(repeats)]
            rows.append((name, statistics.median(ours), statistics.median(theirs)))
    table = Table(
        title=f"Per-step time, {STEPS}-step episode, zero-latency scripted model (median of {repeats})"
    )
    table.add_column("cell kind")
    table.add_column("nbagent (real kernel)", justify="right")
    table.add_column("smolagents CodeAgent (local executor)", justify="right")
    table.add_column("ratio nbagent / smolagents", justify="right")
    for name, ours_s, theirs_s in rows:
        table.add_row(
            name, f"{ours_s * 1000:.1f} ms", f"{theirs_s * 1000:.1f} ms", f"{ours_s / theirs_s:.2f}"
        )
    Console().print(table)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--cells", nargs="+", choices=[name.split()[0] for name in CELLS], help="cell kinds (default: all)"
    )
    args = parser.parse_args()
    chosen = {name: code for name, code in CELLS.items() if not args.cells or name.split()[0] in args.cells}
    asyncio.run(main(args.repeats, chosen))
