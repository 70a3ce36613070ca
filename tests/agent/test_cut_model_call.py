"""A limit that cuts a model call is recorded and explained: real kernel, real HTTP (the fake OpenAI
server), the agent loop and the `nbagent run` console script."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import anyio
import nbformat
import pytest

from nbagent.agent.agent import Agent
from nbagent.cli.options import EXIT_NO_ANSWER
from nbagent.models.base import ChatMessage
from nbagent.models.openai import OpenAIModel
from nbagent.models.testing import FunctionModel
from nbagent.trajectory import SamplingSettings, Termination, read_trajectories
from tests.fixtures.fake_openai import Body, FakeOpenAIServer, script_responder, step_index

STEP = "<think>Add.</think>\n<code>\nprint(2 + 3)\n</code>"
ENDPOINT_ENV = ("NBAGENT_BASE_URL", "OPENAI_BASE_URL", "NBAGENT_MODEL", "NBAGENT_API_KEY", "OPENAI_API_KEY")


def hang_after_the_first_step(body: Body) -> float:
    return 60.0 if step_index(body) else 0.0


async def test_the_episode_timeout_records_the_model_call_it_cut() -> None:
    with FakeOpenAIServer(script_responder([STEP]), latency_s=hang_after_the_first_step) as server:
        model = OpenAIModel(server.model, base_url=server.base_url)
        t0 = time.monotonic()
        result = await Agent(model, episode_timeout_s=4).run("What is 2+3? Use Python.")
        elapsed = time.monotonic() - t0
        await model.aclose()
        sent = list(server.requests)
    assert elapsed < 15
    assert result.termination is Termination.TIMEOUT
    assert len(result.steps) == 1
    assert [body["max_tokens"] for body in sent] == [3072, 3072]  # L0's reply budget, by default
    cut = result.trajectory.unfinished_call
    assert cut is not None
    assert cut.step_index == 1
    assert cut.messages == sent[1]["messages"]  # what was sent, as a step records it
    assert cut.messages[-1]["content"].endswith("5\n</output>")
    assert cut.started_at >= result.trajectory.started_at
    assert 0 < cut.ran_s < 4
    assert cut.reason == "episode timeout of 4 s reached during the model call"
    expected = (
        f"The episode timeout of 4 s was reached during model call 2, which had run {cut.ran_s:.1f} s "
        "without a reply (replies may be up to 3,072 tokens)."
    )
    assert result.termination_detail == expected
    assert result.error is None  # a limit, not an error


async def test_cancellation_during_a_model_call_records_it() -> None:
    async def hang(messages: list[ChatMessage], settings: SamplingSettings) -> str:
        await anyio.sleep(60)
        return STEP

    agent_run = Agent(FunctionModel(hang)).iter("q")
    with anyio.move_on_after(2):
        async for _ in agent_run:
            pass
    result = agent_run.result
    assert result is not None
    assert result.termination is Termination.CANCELLED
    cut = result.trajectory.unfinished_call
    assert cut is not None
    assert (cut.step_index, cut.reason) == (0, "episode cancelled during the model call")
    assert cut.messages[0]["role"] == "system"
    assert result.termination_detail == (
        f"The episode was cancelled during model call 1, which had run {cut.ran_s:.1f} s without a reply."
    )


async def test_an_episode_without_a_cut_call_records_none() -> None:
    with FakeOpenAIServer(script_responder([STEP])) as server:
        model = OpenAIModel(server.model, base_url=server.base_url)
        result = await Agent(model, max_steps=1).run("q")
        await model.aclose()
    assert result.termination is Termination.MAX_STEPS
    assert result.trajectory.unfinished_call is None
    assert result.termination_detail == "The step limit (1 step) was reached without an answer."


@pytest.mark.slow
def test_nbagent_run_prints_why_the_model_call_was_cut(tmp_path: Path) -> None:
    """The issue's case: the model never answers within the episode; `nbagent run` says so."""
    script = Path(sys.executable).with_name("nbagent")
    env = {k: v for k, v in os.environ.items() if k not in ENDPOINT_ENV}
    env["COLUMNS"] = "250"
    traj_path, nb_path = tmp_path / "t.jsonl", tmp_path / "run.ipynb"
    with FakeOpenAIServer(script_responder([STEP]), latency_s=60.0) as server:
        cmd = [str(script), "run", "What is 2+3? Use Python.", "--base-url", server.base_url]
        cmd += ["--max-steps", "2", "--episode-timeout", "3"]
        proc = subprocess.run(
            [*cmd, "--trajectory", str(traj_path), "--notebook", str(nb_path)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        sent = list(server.requests)
    out = proc.stdout + proc.stderr
    assert proc.returncode == EXIT_NO_ANSWER, out
    (traj,) = read_trajectories(traj_path)
    cut = traj.unfinished_call
    assert cut is not None
    assert cut.messages == sent[0]["messages"]
    assert sent[0]["max_tokens"] == 3072
    detail = (
        f"The episode timeout of 3 s was reached during model call 1, which had run {cut.ran_s:.1f} s "
        "without a reply (replies may be up to 3,072 tokens)."
    )
    assert traj.termination_detail == detail
    assert f"No answer (timeout). {detail}" in out
    assert "0 steps in" in out
    last_cell = nbformat.read(str(nb_path), as_version=4).cells[-1]
    assert last_cell.source == f"## No answer\n\nThe episode ended with `timeout`. {detail}"
