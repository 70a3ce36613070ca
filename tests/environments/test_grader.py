"""The SimpleQA LLM grader through nbagent's OpenAIModel against a real local OpenAI-compatible server."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from nbagent.environments import load_environment
from nbagent.models.openai import OpenAIModel
from nbagent.trajectory import TaskSpec
from nbagent_environments.qa import QAEnvironment
from nbagent_environments.qa.scoring import GraderError, SimpleQAGrader
from tests.fixtures.fake_openai import FakeOpenAIServer, FakeServerError, first_user_text
from tests.fixtures.trajectories import trajectory


def judge(body: dict[str, Any]) -> str:
    """A stand-in judge: reads the gold and graded answers out of the prompt the grader sent."""
    prompt = first_user_text(body)
    gold = re.search(r"Gold answer: (.*)", prompt)
    answer = re.search(r"Answer to grade: (.*)", prompt)
    assert gold
    assert answer
    if "don't know" in answer.group(1):
        return "C"
    return "A" if gold.group(1).lower() in answer.group(1).lower() else "B"


@pytest.fixture
def judge_server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(judge) as server:
        yield server


async def test_grades_and_prompt(judge_server: FakeOpenAIServer) -> None:
    grader = SimpleQAGrader.from_endpoint("judge-model", base_url=judge_server.base_url, api_key="none")
    try:
        correct = await grader.grade("Who painted the mural?", "Ivy Marsh", "It was Ivy Marsh.")
        wrong = await grader.grade("Who painted the mural?", "Ivy Marsh", "Tom Reed")
        unsure = await grader.grade("Who painted the mural?", "Ivy Marsh", "I don't know")
        empty = await grader.grade("Who painted the mural?", "Ivy Marsh", "   ")
    finally:
        await grader.aclose()
    assert (correct.grade, wrong.grade, unsure.grade, empty.grade) == (
        "correct",
        "incorrect",
        "not_attempted",
        "not_attempted",
    )
    assert correct.raw == "A"
    assert len(judge_server.requests) == 3  # an empty answer is not sent
    sent = judge_server.requests[0]
    assert sent["model"] == "judge-model"
    assert sent["temperature"] == 0.0
    assert "Question: Who painted the mural?" in first_user_text(sent)
    assert correct.as_breakdown() == {
        "judge_correct": 1.0,
        "judge_incorrect": 0.0,
        "judge_not_attempted": 0.0,
    }


async def test_unparseable_reply_counts_as_not_attempted(judge_server: FakeOpenAIServer) -> None:
    judge_server.responder = lambda body: "Hmm, hard to say."
    grader = SimpleQAGrader(OpenAIModel("j", base_url=judge_server.base_url, api_key="none"))
    verdict = await grader.grade("q", "gold", "answer")
    await grader.aclose()
    assert verdict.grade == "not_attempted"
    assert verdict.raw == "Hmm, hard to say."


async def test_judge_failure_is_a_grader_error(judge_server: FakeOpenAIServer) -> None:
    def broken(body: dict[str, Any]) -> str:
        raise FakeServerError(400, "model not found")

    judge_server.responder = broken
    grader = SimpleQAGrader(OpenAIModel("j", base_url=judge_server.base_url, api_key="none", max_retries=0))
    with pytest.raises(GraderError, match="the SimpleQA judge failed"):
        await grader.grade("q", "gold", "answer")
    await grader.aclose()


async def test_qa_environment_adds_the_judge_to_the_breakdown(judge_server: FakeOpenAIServer) -> None:
    env = load_environment(
        "qa",
        dataset="demo",
        judge_model="judge-model",
        judge_base_url=judge_server.base_url,
        judge_api_key="x",
    )
    assert isinstance(env, QAEnvironment)
    task = TaskSpec(id="t", prompt="p", references=["Ivy Marsh"], metadata={"question": "Who painted it?"})
    reward = await env.score(trajectory(task, [], "The painter was Ivy Marsh"))
    assert reward.breakdown["judge_correct"] == 1.0
    assert reward.breakdown["exact_match"] == 0.0  # EM is strict, the judge is not
    assert "Question: Who painted it?" in first_user_text(judge_server.requests[-1])
    assert env.judge is not None
    await env.judge.aclose()
