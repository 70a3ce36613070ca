"""A small arithmetic environment and a scripted "model" that solves it, for collection tests.

``--env tests.rollout.envs`` loads it by module path (so subprocesses and Ray actors find it too).
The responder reads the two numbers of the question, has the kernel compute their sum in a first
cell, print it again in the middle steps, and submit it from the kernel in the last one: every
episode runs real code in a real kernel and ends with ``submit_final_answer``. A question that
contains ``BOOM`` makes the server answer HTTP 400 (an endpoint error); ``WRONG`` makes it submit a
wrong sum (reward 0).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nbagent.environments import SimpleEnvironment
from nbagent.trajectory import TaskSpec, Termination, Trajectory, read_trajectories
from tests.fixtures.fake_openai import Body, FakeServerError, Responder, first_user_text, step_index


def arithmetic_tasks(n: int, *, boom: int = 0, wrong: int = 0, pad: int = 0) -> list[TaskSpec]:
    """`n` sum questions; the first `boom` trigger an endpoint error, the next `wrong` a wrong answer.
    Each prompt ends with `pad` filler characters (large records)."""
    tasks = []
    for i in range(n):
        marker = "BOOM " if i < boom else "WRONG " if i < boom + wrong else ""
        prompt = f"{marker}What is {i} + {i + 7}?" + (" Filler:" + "x" * pad if pad else "")
        tasks.append(TaskSpec(id=f"add-{i:03d}", prompt=prompt, references=[str(2 * i + 7)]))
    return tasks


def _check(answer: Any, task: TaskSpec) -> float:
    return float(str(answer).strip() == task.references[0])


def _dying_check(marker: Path) -> Callable[[Any, TaskSpec], float]:
    def check(answer: Any, task: TaskSpec) -> float:
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL))  # exactly one process wins
        except FileExistsError:
            return _check(answer, task)
        os._exit(1)  # the process scoring this episode dies, once

    return check


def load_environment(
    n: int = 12, boom: int = 0, wrong: int = 0, die_once: str | None = None, pad: int = 0
) -> SimpleEnvironment:
    """The arithmetic environment: every task in the ``train`` split. With `die_once` (a file path that
    does not exist yet), the first episode scored kills the process that scores it and creates the file."""
    check = _check if die_once is None else _dying_check(Path(die_once))
    tasks = arithmetic_tasks(n, boom=boom, wrong=wrong, pad=pad)
    return SimpleEnvironment("arith", {"train": tasks}, check)


def arithmetic_responder(steps: int = 2) -> Responder:
    """Solve an arithmetic task in `steps` model calls (compute, print again ..., submit)."""
    if steps < 2:
        raise ValueError("an episode needs at least a compute step and a submit step")

    def respond(body: Body) -> str:
        question = first_user_text(body)
        if "BOOM" in question:
            raise FakeServerError(400, "this model refuses the prompt")
        a, b = (int(x) for x in re.findall(r"What is (\d+) \+ (\d+)\?", question)[0])
        step = step_index(body)
        if step == 0:
            return (
                f"<think>I add the two numbers in Python.</think><code>total = {a} + {b}\nprint(total)</code>"
            )
        if step < steps - 1:
            return "<think>Let me look at the total again.</think><code>print('total is', total)</code>"
        answer = "total + 1" if "WRONG" in question else "total"
        return (
            f"<think>The total is computed; submitting it.</think><code>submit_final_answer({answer})</code>"
        )

    return respond


def resumed_trajectories(out: Path, *, tasks: int, samples: int, before: int) -> list[Trajectory]:
    """Check that `out` holds every (task, sample) pair once, and that the episodes after the first
    `before` (the resumed part) all solved their task with policy version 3; return those."""
    trajs = list(read_trajectories(out))
    counted = Counter((t.task.id, t.sample_index) for t in trajs)
    assert set(counted) == {(f"add-{i:03d}", s) for i in range(tasks) for s in range(samples)}
    assert max(counted.values()) == 1
    resumed = trajs[before:]
    assert all(t.termination is Termination.SUBMITTED for t in resumed)
    assert all(t.reward is not None and t.reward.total == 1.0 for t in resumed)
    assert all(t.model.policy_version == 3 for t in resumed)
    return resumed
