"""Context assembly and the context policies (hard, summarize, none), with the estimate and a counter."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from nbagent.agent.history import (
    ContextBudgetExceeded,
    ContextBuilder,
    Turn,
    estimate_tokens,
    summary_request,
)
from nbagent.errors import ConfigError
from nbagent.models.base import ChatMessage

TURNS = [Turn(index=i, assistant=f"reply {i} " + "x" * 400, observation=f"out {i}") for i in range(6)]


def test_estimate_is_chars_over_four_plus_overhead() -> None:
    assert estimate_tokens([{"role": "user", "content": "abcde"}]) == 2 + 4
    assert estimate_tokens([{"role": "user", "content": ""}, {"role": "user", "content": None}]) == 8


def test_assemble_order_and_notepad_at_the_end() -> None:
    builder = ContextBuilder(policy="hard", budget_tokens=None, count=estimate_tokens)
    messages = builder.assemble("SYS", "Task: t", TURNS[:2], notepad="Todo:\n1. [ ] a", note="last step")
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert messages[2]["content"].startswith("reply 0")
    assert messages[-1]["content"].startswith("out 1")
    assert messages[-1]["content"].endswith("Todo:\n1. [ ] a\n\nlast step")
    # without history, the notepad goes after the task
    first = builder.assemble("SYS", "Task: t", [], notepad="Facts:\n- f")
    assert first[-1]["content"] == "Task: t\n\nYour notepad (always shown here, at the end):\nFacts:\n- f"


async def test_under_budget_nothing_happens() -> None:
    builder = ContextBuilder(policy="hard", budget_tokens=10_000, count=estimate_tokens)
    messages, events = await builder.build("SYS", "Task: t", TURNS)
    assert events == []
    assert len(messages) == 2 + 2 * len(TURNS)


async def test_hard_drops_oldest_steps_and_is_sticky() -> None:
    builder = ContextBuilder(policy="hard", budget_tokens=400, count=estimate_tokens)
    messages, events = await builder.build("SYS", "Task: t", TURNS, notepad="Facts:\n- kept")
    assert len(events) == 1
    event = events[0]
    assert event.kind == "trim"
    n = len(event.dropped_steps)
    assert 0 < n < len(TURNS)
    assert event.dropped_steps == list(range(n))  # the oldest ones
    assert event.tokens_before > 400 >= event.tokens_after == estimate_tokens(messages)
    assert f"Steps 1-{n} were removed" in messages[1]["content"]
    assert messages[0]["content"] == "SYS"
    assert "Facts:\n- kept" in messages[-1]["content"]
    kept = [m["content"][:7] for m in messages if m["role"] == "assistant"]
    assert kept == [f"reply {i}" for i in range(n, len(TURNS))]
    # keeping one more step would not have fitted
    last_dropped = TURNS[n - 1]
    one_more = [{"content": last_dropped.assistant}, {"content": last_dropped.observation}]
    assert event.tokens_after + estimate_tokens(one_more) > 400
    # the next call with the same turns keeps the trim and records nothing new
    again, events2 = await builder.build("SYS", "Task: t", TURNS, notepad="Facts:\n- kept")
    assert events2 == []
    assert again == messages


async def test_hard_over_budget_without_history_raises() -> None:
    builder = ContextBuilder(policy="hard", budget_tokens=50, count=estimate_tokens)
    with pytest.raises(ContextBudgetExceeded, match="Even without any history"):
        await builder.build("S" * 400, "Task: t", TURNS)


async def test_none_policy_raises_instead_of_trimming() -> None:
    builder = ContextBuilder(policy="none", budget_tokens=400, count=estimate_tokens)
    with pytest.raises(ContextBudgetExceeded, match="policy is 'none'"):
        await builder.build("SYS", "Task: t", TURNS)


async def test_none_policy_without_budget_keeps_everything() -> None:
    builder = ContextBuilder(policy="none", budget_tokens=None, count=estimate_tokens)
    messages, events = await builder.build("SYS", "Task: t", TURNS)
    assert events == []
    assert len(messages) == 14


async def test_model_counter_is_used() -> None:
    calls: list[int] = []

    def count(messages: Sequence[ChatMessage]) -> int:
        calls.append(len(messages))
        return 100 * len(messages)

    builder = ContextBuilder(policy="hard", budget_tokens=700, count=count)
    messages, events = await builder.build("SYS", "Task: t", TURNS)
    assert calls
    assert len(messages) == 6  # system, task and the two latest steps
    assert events[0].tokens_after == 600


async def test_summarize_replaces_dropped_steps_with_the_model_summary() -> None:
    seen: list[tuple[list[int], str | None]] = []

    async def summarize(turns: Sequence[Turn], previous: str | None) -> str:
        seen.append(([t.index for t in turns], previous))
        return f"summary of {len(turns)} steps"

    builder = ContextBuilder(
        policy="summarize", budget_tokens=500, count=estimate_tokens, summarize=summarize
    )
    messages, events = await builder.build("SYS", "Task: t", TURNS)
    assert len(events) == 1
    assert events[0].kind == "summarize"
    assert seen[0][0] == events[0].dropped_steps
    assert events[0].detail == f"summary of {len(seen[0][0])} steps"
    assert events[0].detail in messages[1]["content"]
    assert events[0].tokens_after <= 500
    # later, more turns: the previous summary is handed to the summarizer
    more = [*TURNS, *(Turn(index=i, assistant="y" * 400, observation="o") for i in range(6, 9))]
    _, events2 = await builder.build("SYS", "Task: t", more)
    assert events2
    assert seen[-1][1] == events[0].detail


def test_summarize_needs_a_summarizer_and_policy_names_are_checked() -> None:
    with pytest.raises(ConfigError, match="needs a summarizer"):
        ContextBuilder(policy="summarize", budget_tokens=10, count=estimate_tokens)
    with pytest.raises(ConfigError, match="Unknown context policy 'soft'"):
        ContextBuilder(policy="soft", budget_tokens=10, count=estimate_tokens)  # type: ignore[arg-type]


def test_summary_request_cuts_long_turns() -> None:
    text = summary_request("Task: t", [Turn(0, "a" * 5000, "b")], "before", max_chars=1000)
    assert "Summary of even earlier steps:\nbefore" in text
    assert "[...]" in text
    assert len(text) < 1200
