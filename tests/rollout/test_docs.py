"""The Python example of docs/collect.md runs as written (its endpoint: the fake OpenAI server)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from nbagent.trajectory import Termination, read_trajectories
from tests.fixtures.fake_openai import Body, FakeOpenAIServer, step_index

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "collect.md"


def search_then_answer(body: Body) -> str:
    """Search the demo corpus, then submit a fixed (mostly wrong) answer."""
    if step_index(body) == 0:
        return "<think>I search the corpus.</think><code>print(search_corpus('founder'))</code>"
    return "<think>I answer from what I found.</think><code>submit_final_answer('Grioton')</code>"


def python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", DOC.read_text(encoding="utf-8"), flags=re.DOTALL | re.M)


@pytest.mark.slow
def test_the_worker_processes_example_runs_as_a_script(
    fake_openai_server: FakeOpenAIServer, tmp_path: Path
) -> None:
    """As a user runs it: a script of its own (spawned workers import it again), two worker processes."""
    (block,) = [block for block in python_blocks() if "workers=2" in block]
    (tmp_path / "collect_workers.py").write_text(block)
    fake_openai_server.responder = search_then_answer
    env = {**os.environ, "NBAGENT_BASE_URL": fake_openai_server.base_url, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "collect_workers.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["4", "0"]
    trajs = list(read_trajectories(tmp_path / "runs" / "qa-workers.jsonl"))
    assert all(t.termination is Termination.SUBMITTED for t in trajs)
    assert len({t.metadata["worker"] for t in trajs}) == 2


def test_collect_doc_example_runs(
    fake_openai_server: FakeOpenAIServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (block,) = [block for block in python_blocks() if "on_result" in block]
    fake_openai_server.responder = search_then_answer
    monkeypatch.setenv("NBAGENT_BASE_URL", fake_openai_server.base_url)
    monkeypatch.chdir(tmp_path)
    exec(compile(block, f"{DOC}:python", "exec"), {"__name__": "docs_collect"})
    trajs = list(read_trajectories(tmp_path / "runs" / "qa-train.jsonl"))
    assert len(trajs) == 6
    assert all(t.termination is Termination.SUBMITTED for t in trajs)
    assert all(t.model.policy_version == 0 and t.reward is not None for t in trajs)
    assert any("search_corpus" in call.name for t in trajs for call in t.steps[0].cell.tool_calls)  # type: ignore[union-attr]
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("6 0 ")  # written, failed, reward mean
