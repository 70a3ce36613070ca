"""The Python example of docs/collect.md runs as written (its endpoint: the fake OpenAI server)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nbagent.trajectory import Termination, read_trajectories
from tests.fixtures.fake_openai import Body, FakeOpenAIServer, step_index

DOC = Path(__file__).resolve().parents[2] / "docs" / "collect.md"


def search_then_answer(body: Body) -> str:
    """Search the demo corpus, then submit a fixed (mostly wrong) answer."""
    if step_index(body) == 0:
        return "<think>I search the corpus.</think><code>print(search_corpus('founder'))</code>"
    return "<think>I answer from what I found.</think><code>submit_final_answer('Grioton')</code>"


def test_collect_doc_example_runs(
    fake_openai_server: FakeOpenAIServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (block,) = re.findall(r"^```python\n(.*?)^```$", DOC.read_text(encoding="utf-8"), flags=re.DOTALL | re.M)
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
