"""Whole episodes on the shipped environments: a scripted model, a real Jupyter kernel, the environment's
real tools called from kernel code through the tool bridge, and the environment's score."""

from __future__ import annotations

from pathlib import Path

import pytest

from nbagent.environments import load_environment
from nbagent.models.testing import ScriptedModel
from nbagent.rollout import agent_for_environment
from nbagent.trajectory import CellStatus, Termination

from .conftest import LocalServer, Reply


def code(body: str, think: str) -> str:
    return f"<think>{think}</think>\n<code>\n{body}\n</code>"


async def test_demo_question_answered_with_search_corpus_in_the_kernel() -> None:
    env = load_environment("qa", dataset="demo")
    task = next(t for t in env.tasks("all") if t.id == "demo-000")
    assert task.metadata["question"] == "In which town was the founder of the Faerstead Hospital born?"
    script = [
        code(
            'hits = search_corpus("founder of the Faerstead Hospital", k=3)\nprint(hits[0]["text"])',
            "First find the hospital's passage to learn who founded it.",
        ),
        code(
            'person = search_corpus("Kodroush Fonouskouth", k=1)[0]\nprint(person["text"])',
            "The hospital was founded by Kodroush Fonouskouth; now find where he was born.",
        ),
        code(
            'import re\nsubmit_final_answer(re.search(r"born in ([A-Z]\\w+)", person["text"]).group(1))',
            "The passage names the town where the founder was born.",
        ),
    ]
    agent = agent_for_environment(env, ScriptedModel(script), max_steps=5)
    result = await agent.run(task)
    traj = result.trajectory
    assert result.termination is Termination.SUBMITTED, traj.error
    assert traj.final_answer == "Hiowairstead"
    assert [s.cell.status for s in traj.steps if s.cell] == [CellStatus.OK] * 3
    calls = [c for s in traj.steps if s.cell for c in s.cell.tool_calls]
    assert [c.name for c in calls] == ["search_corpus", "search_corpus", "submit_final_answer"]
    assert calls[0].result[0]["id"] == "p0209"
    assert calls[1].args[0] == "Kodroush Fonouskouth"
    assert "def search_corpus(query: str, k: int = 5) -> list[Passage]:" in traj.system_prompt

    reward = await env.score(traj)
    assert reward.breakdown["exact_match"] == 1.0
    assert reward.breakdown["format"] == 1.0
    assert reward.breakdown["code_execution"] == 1.0
    assert reward.total == pytest.approx(1.0)


async def test_arithmetic_task_answered_by_python_in_the_kernel() -> None:
    env = load_environment("math", weights={"answer": 0.8, "format": 0.1, "code_execution": 0.1})
    task = next(t for t in env.tasks("all") if t.id == "arithmetic-004")
    assert task.metadata["problem"] == "What is (39 + 269) * 8?"
    script = [
        code("print((39 + 269) / 0)", "Compute the product in Python, carefully."),
        code("value = (39 + 269) * 8\nsubmit_final_answer(value)", "Division was a mistake; multiply."),
    ]
    agent = agent_for_environment(env, ScriptedModel(script), max_steps=4)
    traj = (await agent.run(task)).trajectory
    assert traj.final_answer == "2464"
    reward = await env.score(traj)
    assert reward.breakdown["correct"] == 1.0
    assert reward.breakdown["code_execution"] == 0.5  # the first cell raised ZeroDivisionError
    assert reward.total == pytest.approx(0.8 + 0.1 * 1.0 + 0.1 * 0.5)


async def test_web_search_from_the_kernel_keeps_the_key_in_the_host(
    local_server: LocalServer, monkeypatch: pytest.MonkeyPatch, fixtures_dir: Path
) -> None:
    local_server.route(
        "POST",
        "/search",
        Reply(
            body={
                "organic": [
                    {"title": "Sallow Bridge", "link": "https://x.example", "snippet": "Seven arches."}
                ]
            }
        ),
    )
    monkeypatch.setenv("SERPER_API_KEY", "host-only-secret")
    env = load_environment(
        "qa", dataset=str(fixtures_dir / "nq_test.jsonl"), search="web", search_base_url=local_server.url
    )
    assert [t.name for t in env.tools()] == ["web_search", "read_webpage"]
    task = next(t for t in env.tasks("all") if t.id == "nq_test-test_1")
    script = [
        code(
            'import os\nprint(os.environ.get("SERPER_API_KEY"))\nprint(web_search("Sallow Bridge arches"))',
            "Search the web for the bridge and check the environment.",
        ),
        code('submit_final_answer("seven")', "The snippet says seven arches."),
    ]
    traj = (await agent_for_environment(env, ScriptedModel(script), max_steps=3).run(task)).trajectory
    observation = traj.steps[0].observation
    assert "None" in observation
    assert "host-only-secret" not in observation
    assert "1. Sallow Bridge\n   https://x.example\n   Seven arches." in observation
    assert local_server.requests[0].headers["x-api-key"] == "host-only-secret"
    reward = await env.score(traj)
    assert reward.breakdown["exact_match"] == 1.0
