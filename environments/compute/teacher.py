"""A reference teacher for the compute tasks: episodes of the embedded agent's format, for SFT.

The teacher answers through the real agent loop and a real (sandboxed) kernel, with exactly the
settings `nbagent run` gives the embedded model (markdown steps after a ```` ```python ```` opener, the
same system prompt, reminder and sampling limits). Step 1 runs the task's reference solution, which
prints the answer; step 2, after reading the output, calls ``submit_final_answer(answer)``. The calls
carry SmolLM2's real token ids (its chat template), so `nbagent-train sft` trains on them as recorded.

    python -m nbagent_environments.compute.teacher --out runs/embedded-agent/teacher.jsonl
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from nbagent.agent.prompts import TASK_TEMPLATE
from nbagent.models.base import ChatMessage
from nbagent.models.testing import FunctionModel
from nbagent.rollout import CollectSummary, agent_for_environment, collect
from nbagent.trajectory import SamplingSettings

from .environment import ComputeEnvironment

SUBMIT = "submit_final_answer(answer)\n```"
_TASK_PREFIX = TASK_TEMPLATE.split("{task}")[0]


class Teacher:
    """Replies with a task's reference solution, then submits the variable it printed."""

    def __init__(self, env: ComputeEnvironment) -> None:
        self.solutions = {t.prompt: str(t.metadata["solution"]) for t in env.tasks("all")}

    def __call__(self, messages: list[ChatMessage], settings: SamplingSettings) -> str:
        users = [str(m.get("content") or "") for m in messages if m.get("role") == "user"]
        question = users[0].removeprefix(_TASK_PREFIX).strip()
        if question not in self.solutions:
            raise KeyError(f"the teacher knows no solution for {question!r}")
        if len(users) > 1:  # the solution ran and printed the answer
            return SUBMIT
        return self.solutions[question] + "```"


async def record(
    out: Path, *, split: str = "train", concurrency: int = 4, max_steps: int = 10
) -> CollectSummary:
    """Record one teacher episode per task of `split` into `out` (resumable)."""
    from nbagent.cli.options import local_agent_settings
    from nbagent.models.local import ensure_smollm2

    env = ComputeEnvironment()
    folder = ensure_smollm2()
    model = FunctionModel(Teacher(env), tokenizer=str(folder), name="compute-teacher")
    agent = agent_for_environment(
        env, model, **local_agent_settings(model, folder, max_steps=max_steps, sandbox=True)
    )
    return await collect(
        env, agent, out=out, split=split, concurrency=concurrency, resume=True, progress=True
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="Trajectory JSONL file (resumed if present).")
    parser.add_argument("--split", default="train")
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    summary = asyncio.run(record(args.out, split=args.split, concurrency=args.concurrency))
    print(f"{summary.written} episodes written to {args.out}, mean reward {summary.reward_mean}")


if __name__ == "__main__":
    main()
