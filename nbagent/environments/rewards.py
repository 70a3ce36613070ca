"""L0's trajectory-level reward parts (format, code execution) and their weighted sum with the answer."""

from __future__ import annotations

from typing import TypeAlias

from pydantic import BaseModel, ConfigDict, Field

from nbagent.trajectory import CellStatus, Reward, Trajectory


class RewardWeights(BaseModel):
    """Weights of the reward parts. L0: 0.8 answer (its "QA" part), 0.1 format, 0.1 code execution."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    answer: float = Field(0.8, ge=0)
    format: float = Field(0.1, ge=0)
    code_execution: float = Field(0.1, ge=0)


ANSWER_ONLY = RewardWeights(answer=1.0, format=0.0, code_execution=0.0)
"""All of the reward on the answer."""


def format_score(trajectory: Trajectory, *, min_think_chars: int = 10, min_code_chars: int = 5) -> float:
    """Share of steps with a think longer than `min_think_chars` and code longer than `min_code_chars`.

    L0's format reward; lengths are of the stripped text. A trajectory without steps scores 0.
    """
    if not trajectory.steps:
        return 0.0
    good = sum(
        1
        for step in trajectory.steps
        if step.action.kind == "code"
        and len((step.action.think or "").strip()) > min_think_chars
        and len((step.action.code or "").strip()) > min_code_chars
    )
    return good / len(trajectory.steps)


def code_execution_score(trajectory: Trajectory) -> float:
    """1 minus the share of executed cells that did not end ``ok`` (error, timeout, crash).

    L0's code-execution reward. A trajectory that executed no cell scores 0 (no credit for no code).
    """
    cells = [step.cell for step in trajectory.steps if step.cell is not None]
    if not cells:
        return 0.0
    failed = sum(1 for cell in cells if cell.status is not CellStatus.OK)
    return 1.0 - failed / len(cells)


AnswerScore: TypeAlias = float | bool | Reward
"""What an answer check returns: a number in [0, 1], a bool, or a `Reward` whose total is the answer
score and whose breakdown carries extra metrics (e.g. exact match and F1)."""


def combine_reward(answer: AnswerScore, trajectory: Trajectory, weights: RewardWeights) -> Reward:
    """Weighted sum of the answer score, `format_score` and `code_execution_score`, with a breakdown."""
    extra: dict[str, float] = {}
    if isinstance(answer, Reward):
        extra = dict(answer.breakdown)
        answer_value = answer.total
    else:
        answer_value = float(answer)
    fmt = format_score(trajectory)
    code = code_execution_score(trajectory)
    total = weights.answer * answer_value + weights.format * fmt + weights.code_execution * code
    return Reward(
        total=total, breakdown={"answer": answer_value, **extra, "format": fmt, "code_execution": code}
    )
