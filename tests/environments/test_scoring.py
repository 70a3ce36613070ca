"""QA scorers against hand-computed cases and the official HotpotQA evaluation script's behaviour,
and L0's composite reward computed from hand-built trajectories."""

from __future__ import annotations

import pytest

from nbagent.environments import RewardWeights, code_execution_score, combine_reward, format_score
from nbagent.trajectory import CellStatus, TaskSpec, Termination
from nbagent_environments.qa import QAEnvironment
from nbagent_environments.qa.scoring import (
    exact_match,
    f1_score,
    has_answer,
    normalize_answer,
    parse_grade,
    qa_reward,
)
from tests.fixtures.trajectories import step, trajectory


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Eiffel Tower!", "eiffel tower"),
        ("  an   Apple a day ", "apple day"),
        ("U.S.A.", "usa"),
        ("Theatre of the absurd", "theatre of absurd"),  # only whole-word articles go
        ("rock-n-roll", "rocknroll"),  # hyphens are punctuation and vanish, as in the official script
        ("Café  Été", "café été"),  # non-ASCII letters stay
        ("", ""),
    ],
)
def test_normalize_answer(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


def test_exact_match_takes_the_best_reference() -> None:
    assert exact_match("the Beatles", ["Rolling Stones", "Beatles"]) == 1.0
    assert exact_match("Beatles, The", "The Beatles") == 1.0  # articles go wherever they stand
    assert exact_match("Beatles band", "The Beatles") == 0.0
    assert exact_match("anything", []) == 0.0
    assert exact_match("42", "42.") == 1.0


def test_f1_hand_computed() -> None:
    # prediction tokens: barack obama jr ; reference: barack hussein obama -> 2 shared
    # precision 2/3, recall 2/3 -> F1 2/3
    assert f1_score("Barack Obama Jr.", "Barack Hussein Obama") == pytest.approx(2 / 3)
    # prediction: new york city ; reference: york -> precision 1/3, recall 1 -> F1 0.5
    assert f1_score("New York City", "York") == pytest.approx(0.5)
    # repeated tokens count with multiplicity: "a a b" vs "a b b" -> normalized "b" (a is an article!)
    assert f1_score("x x y", "x y y") == pytest.approx(2 / 3)
    assert f1_score("Paris", ["London", "paris, France"]) == pytest.approx(2 / 3)


def test_f1_follows_the_official_yes_no_rule() -> None:
    # the official script gives 0 when either side is yes/no/noanswer and they differ
    assert f1_score("yes", "yes") == 1.0
    assert f1_score("yes it is", "yes") == 0.0  # no partial credit around a yes/no reference
    assert f1_score("it is yes", "it is") == pytest.approx(0.8)  # neither side is special: plain F1
    assert f1_score("no", "no way") == 0.0  # prediction is "no", reference differs
    assert f1_score("yes", "no") == 0.0
    assert f1_score("noanswer", "no answer") == 0.0
    # and, as there, two empty strings match exactly but share no token
    assert exact_match("", "") == 1.0
    assert f1_score("", "") == 0.0
    assert f1_score("the", "a") == 0.0


def test_has_answer_needs_whole_tokens() -> None:
    assert has_answer("I believe it is Paris, France.", ["Paris"]) == 1.0
    assert has_answer("a great party", ["art"]) == 0.0
    assert has_answer("The New York Times", ["new york"]) == 1.0
    assert has_answer("anything", ["", "the"]) == 0.0  # references that normalize to nothing never match


def test_qa_reward_is_l0s_mix() -> None:
    exact = qa_reward("Paris", ["Paris"])
    assert exact.total == pytest.approx(1.0)
    contained = qa_reward("It is Paris", ["Paris"])
    assert contained.total == pytest.approx(0.1)
    assert contained.breakdown == {"exact_match": 0.0, "f1": pytest.approx(0.5), "has_answer": 1.0}
    assert qa_reward("Lyon", ["Paris"]).total == 0.0
    assert qa_reward("Paris", ["Paris"], em_weight=0.5).total == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("reply", "grade"),
    [
        ("A", "correct"),
        ("B", "incorrect"),
        ("C", "not_attempted"),
        ("Grade: C) NOT_ATTEMPTED", "not_attempted"),
        ("INCORRECT", "incorrect"),
        ("correct", "correct"),
        ("not attempted", "not_attempted"),
        ("I cannot tell", None),
    ],
)
def test_parse_grade(reply: str, grade: str | None) -> None:
    assert parse_grade(reply) == grade


# --------------------------------------------------------------------------------------------------
# Trajectory-level parts
# --------------------------------------------------------------------------------------------------

TASK = TaskSpec(id="t", prompt="Capital of France?", references=["Paris"], metadata={"question": "Capital?"})
GOOD_THINK = "I should search for the capital."  # > 10 chars
GOOD_CODE = "print(search_corpus('France capital'))"  # > 5 chars


def test_format_score_counts_steps_with_both_parts() -> None:
    steps = [
        step(0, GOOD_THINK, GOOD_CODE),
        step(1, "too short", GOOD_CODE),  # think of 9 chars
        step(2, GOOD_THINK, "x=1"),  # code of 3 chars
        step(3, GOOD_THINK, None, None, format_error=True),
        step(4, "   exactly eleven   ".strip() + "!", "x = 10"),  # 11 chars think, 6 chars code
    ]
    assert format_score(trajectory(TASK, steps, "Paris")) == pytest.approx(2 / 5)
    assert format_score(trajectory(TASK, [], None)) == 0.0


def test_code_execution_score_is_one_minus_error_share() -> None:
    steps = [
        step(0, GOOD_THINK, GOOD_CODE, CellStatus.OK),
        step(1, GOOD_THINK, GOOD_CODE, CellStatus.ERROR),
        step(2, GOOD_THINK, GOOD_CODE, CellStatus.TIMEOUT),
        step(3, GOOD_THINK, GOOD_CODE, CellStatus.OK),
        step(4, GOOD_THINK, None, None, format_error=True),  # no cell: not counted
    ]
    assert code_execution_score(trajectory(TASK, steps, "Paris")) == pytest.approx(0.5)
    assert code_execution_score(trajectory(TASK, steps[4:], None)) == 0.0


def test_combine_reward_weights_and_breakdown() -> None:
    traj = trajectory(
        TASK, [step(0, GOOD_THINK, GOOD_CODE), step(1, "short", "x", CellStatus.ERROR)], "Paris"
    )
    reward = combine_reward(0.5, traj, RewardWeights(answer=2.0, format=1.0, code_execution=4.0))
    assert reward.breakdown == {"answer": 0.5, "format": 0.5, "code_execution": 0.5}
    assert reward.total == pytest.approx(2.0 * 0.5 + 1.0 * 0.5 + 4.0 * 0.5)


async def test_qa_environment_scores_a_hand_built_episode() -> None:
    env = QAEnvironment("demo")
    steps = [
        step(0, GOOD_THINK, GOOD_CODE, CellStatus.OK),
        step(1, "The passage says the capital is Paris.", "print(1/0)", CellStatus.ERROR),
        step(2, "Now I submit the answer.", "submit_final_answer('Paris')", CellStatus.OK),
    ]
    reward = await env.score(trajectory(TASK, steps, "Paris"))
    # QA = 0.9 * 1 + 0.1 * 1 = 1; format = 1 (all steps well formed); code = 1 - 1/3
    assert reward.breakdown["answer"] == pytest.approx(1.0)
    assert reward.breakdown["format"] == pytest.approx(1.0)
    assert reward.breakdown["code_execution"] == pytest.approx(2 / 3)
    assert reward.total == pytest.approx(0.8 * 1.0 + 0.1 * 1.0 + 0.1 * 2 / 3)
    assert {"exact_match", "f1", "has_answer"} <= set(reward.breakdown)


async def test_qa_environment_unanswered_episode() -> None:
    env = QAEnvironment("demo", weights={"answer": 1.0, "format": 0.0, "code_execution": 0.0})
    steps = [step(0, GOOD_THINK, GOOD_CODE, CellStatus.OK)]
    reward = await env.score(trajectory(TASK, steps, None, termination=Termination.MAX_STEPS))
    assert reward.total == 0.0
    assert reward.breakdown["exact_match"] == 0.0
    assert reward.breakdown["format"] == 1.0
    partly = await env.score(trajectory(TASK, steps, "Paris, I think"))
    assert partly.total == pytest.approx(0.1)
