"""The system prompt template: placeholders, callables, answer instructions."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from nbagent.agent.prompts import (
    DEFAULT_SYSTEM_PROMPT,
    PromptContext,
    answer_instructions,
    render_system_prompt,
)

CTX = PromptContext(tools="def f() -> None: ...", step_format="STEP FORMAT", answer="ANSWER", max_steps=7)


def test_default_prompt_has_l0_sections_filled() -> None:
    text = render_system_prompt(DEFAULT_SYSTEM_PROMPT, CTX)
    for heading in (
        "## Your responsibility",
        "## Manage your memory",
        "## Step format",
        "## Plan",
        "## Submitting the answer",
        "## Tools",
        "## Code quality",
        "## Rules",
    ):
        assert heading in text
    assert "STEP FORMAT" in text
    assert "ANSWER" in text
    assert "def f() -> None: ..." in text
    assert "at most 7 steps" in text
    assert "{" not in text.replace("{}", "")


def test_unknown_braces_are_left_alone() -> None:
    text = render_system_prompt('Use {tools} and return {"a": 1} {unknown}', CTX)
    assert text == 'Use def f() -> None: ... and return {"a": 1} {unknown}'


def test_callable_template() -> None:
    assert render_system_prompt(lambda c: f"{c.max_steps} steps", CTX) == "7 steps"
    with pytest.raises(TypeError, match="must return str"):
        render_system_prompt(lambda c: 3, CTX)  # type: ignore[arg-type,return-value]


class City(BaseModel):
    name: str
    population: int


def test_answer_instructions() -> None:
    assert "short string" in answer_instructions(str)
    structured = answer_instructions(City)
    assert "`City`" in structured
    assert '"population"' in structured
    assert "`int`" in answer_instructions(int)
