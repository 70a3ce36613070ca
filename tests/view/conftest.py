"""Real data for the viewer: a trajectory file from a real episode (a real kernel, a scripted model) plus
hand-built records (token ids and logprobs, a `<script>` completion, a GRPO group), and an RL run folder
from a short real run (real kernels and HTTP, the recording backend and the fake server of tests/rl)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import anyio
import pytest

from nbagent.agent.agent import Agent
from nbagent.models.testing import ScriptedModel
from nbagent.trajectory import (
    CellResult,
    CellStatus,
    ContextEvent,
    DisplayData,
    StreamOutput,
    TaskSpec,
    Termination,
    ToolCallRecord,
    Trajectory,
)
from tests.fixtures.fake_openai import FakeOpenAIServer
from tests.fixtures.trajectories import model_call, step, trajectory
from tests.rl.fakes import RecordingBackend, arithmetic_responder
from tests.rl.test_loop import config, run

SCRIPT = "<script>alert(1)</script>"
# A 1x1 red PNG.
PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de0000000c4944415408d763f8cf"
        "c000000301010018dd8db00000000049454e44ae426082"
    )
).decode()
REAL_EPISODE = [
    f"<think>Compute it, show a picture.</think>\n<code>\nimport base64\nfrom IPython.display import Image, "
    f"display\ndisplay(Image(data=base64.b64decode('{PNG}')))\nx = 17 * 23\nprint(x)\n</code>",
    "<think>done</think>\n<code>\nsubmit_final_answer(x)\n</code>",
]


def _real_episode() -> Trajectory:
    agent = Agent(ScriptedModel(REAL_EPISODE), max_steps=3)
    result = anyio.run(agent.run, TaskSpec(id="t17", prompt="What is 17 * 23?"))
    return result.trajectory.model_copy(update={"environment": "demo", "split": "test"})


def _token_episode() -> Trajectory:
    call = model_call(
        "<code>print(5)</code>",
        completion_token_ids=[27, 1851, 29, 1350, 7, 20, 8],
        completion_logprobs=[-0.01, -0.2, -0.9, -2.5, -4.0, -0.05, -0.6],
        prompt_token_ids=[1, 2, 3],
        finish_reason="stop",
    )
    cell = CellResult(
        code="print(5)",
        status=CellStatus.OK,
        outputs=[StreamOutput(name="stdout", text="5\n"), DisplayData(data={"text/plain": "<Figure>"})],
        tool_calls=[ToolCallRecord(name="lookup", kwargs={"key": "five"}, result=5)],
    )
    trim = ContextEvent(kind="trim", dropped_steps=[0], tokens_before=900, tokens_after=300)
    steps = [step(0, "five", "print(5)", cell, call=call, context_events=[trim], notepad="remember 5")]
    return trajectory("tokens", steps, 5, reward=1.0, breakdown={"correct": 1.0}, environment="math")


def _records() -> list[Trajectory]:
    xss = step(0, SCRIPT, SCRIPT, CellStatus.ERROR, call=model_call(f"{SCRIPT}<code>{SCRIPT}</code>"))
    group = [
        trajectory("grpo", [step(0, "g", "print(1)")], reward=float(k % 2), group_id="g1", sample_index=k)
        for k in range(3)
    ]
    return [
        _token_episode(),
        trajectory("xss-task", [xss], reward=0.0, termination=Termination.FORMAT),
        trajectory("slow", [], reward=None, termination=Termination.TIMEOUT),
        *group,
    ]


@pytest.fixture(scope="session")
def trajectory_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Seven episodes: the real one first."""
    path = tmp_path_factory.mktemp("view") / "trajectories.jsonl"
    path.write_text("".join(t.to_json_line() for t in [_real_episode(), *_records()]))
    return path


@pytest.fixture(scope="session")
def run_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-iteration RL run, and an eval report beside it."""
    cfg = config(tmp_path_factory.mktemp("rl") / "run", iterations=2)
    with FakeOpenAIServer(arithmetic_responder(), model="policy") as server:
        loop = run(cfg, server, RecordingBackend(cfg))
    report = {
        "split": "test",
        "success_key": "correct",
        "policies": [
            {"name": "base", "weights": "-", "trajectories": "x", "mean_at_k": 0.4},
            {"name": "v00002", "weights": "adapters/v00002", "trajectories": "y", "mean_at_k": 0.6},
        ],
    }
    (loop.folder.root / "eval").mkdir()
    (loop.folder.root / "eval" / "report.json").write_text(json.dumps(report))
    return loop.folder.root
