"""Building the messages of each model call, and keeping them within a token budget.

The context of step N is: the system prompt, the task, the history of kept steps (the assistant's
reply, then the observation as a user message), and the notepad appended to the last user message so it
is always closest to the end. With a budget, a policy decides what goes when it is exceeded:

- ``"hard"``: drop the oldest steps until the rest fits (system prompt, task and notepad always stay);
- ``"summarize"``: like ``"hard"``, but the dropped steps are replaced by a summary the model writes;
- ``"none"``: never drop anything; an over-budget context ends the episode (``token_budget``).

Dropping is sticky: a step once dropped stays dropped, so the history only changes at a trim. Every trim
or summary is returned as a `ContextEvent`. Tokens are counted with the model's tokenizer when
`Model.count_tokens` returns a number; otherwise with `estimate_tokens` (characters / 4, rounded up, plus
4 tokens of chat-template overhead per message), a deliberately rough figure.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from nbagent.agent.prompts import NOTEPAD_HEADER, SUMMARY_NOTE, TRIMMED_NOTE
from nbagent.errors import ConfigError, NBAgentError
from nbagent.models.base import ChatMessage, Model
from nbagent.trajectory import ContextEvent

ContextPolicy = Literal["hard", "none", "summarize"]
Summarizer = Callable[[Sequence["Turn"], str | None], Awaitable[str]]
"""Writes a summary of some dropped turns, given the previous summary (or None)."""

MESSAGE_OVERHEAD_TOKENS = 4
SUMMARY_RESERVE_TOKENS = 512
"""Room kept for the summary when the 'summarize' policy drops steps (at most a quarter of the budget)."""


class ContextBudgetExceeded(NBAgentError):
    """The context cannot be made to fit the token budget."""


@dataclass(frozen=True)
class Turn:
    """One past step as it appears in the history."""

    index: int
    assistant: str
    observation: str


def estimate_tokens(messages: Sequence[ChatMessage]) -> int:
    """Rough token count: ceil(characters / 4) per message content, plus 4 per message."""
    total = 0
    for message in messages:
        content = message.get("content") or ""
        total += math.ceil(len(str(content)) / 4) + MESSAGE_OVERHEAD_TOKENS
    return total


def token_counter(model: Model) -> Callable[[Sequence[ChatMessage]], int]:
    """Count with the model's tokenizer where it has one, else with `estimate_tokens`."""

    def count(messages: Sequence[ChatMessage]) -> int:
        exact = model.count_tokens(list(messages))
        return estimate_tokens(messages) if exact is None else exact

    return count


def _step_range(indices: Sequence[int]) -> str:
    first, last = indices[0] + 1, indices[-1] + 1
    return str(first) if first == last else f"{first}-{last}"


class ContextBuilder:
    """Assembles each step's messages and applies the context policy (one builder per episode)."""

    def __init__(
        self,
        *,
        policy: ContextPolicy,
        budget_tokens: int | None,
        count: Callable[[Sequence[ChatMessage]], int],
        summarize: Summarizer | None = None,
    ) -> None:
        if policy not in ("hard", "none", "summarize"):
            raise ConfigError(f"Unknown context policy {policy!r}: use 'hard', 'summarize' or 'none'.")
        if policy == "summarize" and summarize is None:
            raise ConfigError("The 'summarize' context policy needs a summarizer.")
        self.policy = policy
        self.budget = budget_tokens
        self.count = count
        self._summarize = summarize
        self._first_kept = 0
        self._dropped: list[int] = []
        self._summary: str | None = None

    def assemble(
        self, system: str, task: str, turns: Sequence[Turn], notepad: str = "", note: str = ""
    ) -> list[ChatMessage]:
        """The messages for the current state, without applying the policy."""
        head = task
        if self._dropped:
            steps = _step_range(self._dropped)
            if self._summary is not None:
                head += "\n\n" + SUMMARY_NOTE.format(steps=steps, summary=self._summary)
            else:
                head += "\n\n" + TRIMMED_NOTE.format(steps=steps)
        messages: list[ChatMessage] = [
            {"role": "system", "content": system},
            {"role": "user", "content": head},
        ]
        for turn in turns[self._first_kept :]:
            messages.append({"role": "assistant", "content": turn.assistant})
            messages.append({"role": "user", "content": turn.observation})
        tail = [text for text in (f"{NOTEPAD_HEADER}\n{notepad}" if notepad else "", note) if text]
        if tail:
            last = messages[-1]
            last["content"] = "\n\n".join([str(last["content"]), *tail])
        return messages

    async def build(
        self, system: str, task: str, turns: Sequence[Turn], notepad: str = "", note: str = ""
    ) -> tuple[list[ChatMessage], list[ContextEvent]]:
        """The messages for the next model call and the context events that produced them.

        Raises `ContextBudgetExceeded` when even the system prompt, task and notepad alone are over
        budget, or when the policy is ``"none"`` and the history is.
        """
        messages = self.assemble(system, task, turns, notepad, note)
        tokens = self.count(messages)
        if self.budget is None or tokens <= self.budget:
            return messages, []
        if self.policy == "none":
            raise ContextBudgetExceeded(
                f"The context has {tokens} tokens, over the budget of {self.budget}, and the context policy "
                "is 'none'. Raise context_budget_tokens or use context_policy='hard' or 'summarize'."
            )
        events: list[ContextEvent] = []
        while tokens > self.budget and self._first_kept < len(turns):
            before = tokens
            target = self.budget
            if self.policy == "summarize":
                target -= min(SUMMARY_RESERVE_TOKENS, self.budget // 4)
            newly = self._drop_until_fits(system, task, turns, notepad, note, target)
            if self.policy == "summarize":
                assert self._summarize is not None
                summary = await self._summarize(newly, self._summary)
                self._summary = summary.strip()
                messages = self.assemble(system, task, turns, notepad, note)
                tokens = self.count(messages)
                events.append(
                    ContextEvent(
                        kind="summarize",
                        dropped_steps=[t.index for t in newly],
                        tokens_before=before,
                        tokens_after=tokens,
                        detail=self._summary,
                    )
                )
            else:
                messages = self.assemble(system, task, turns, notepad, note)
                tokens = self.count(messages)
                events.append(
                    ContextEvent(
                        kind="trim",
                        dropped_steps=[t.index for t in newly],
                        tokens_before=before,
                        tokens_after=tokens,
                    )
                )
        if tokens > self.budget:
            raise ContextBudgetExceeded(
                f"Even without any history the context has {tokens} tokens, over the budget of "
                f"{self.budget} (system prompt, task and notepad). Raise context_budget_tokens or shorten "
                "the prompt."
            )
        return messages, events

    def _drop_until_fits(
        self, system: str, task: str, turns: Sequence[Turn], notepad: str, note: str, target: int
    ) -> list[Turn]:
        """Drop the oldest kept turns until the context has at most `target` tokens; return them."""
        newly: list[Turn] = []
        while self._first_kept < len(turns):
            turn = turns[self._first_kept]
            newly.append(turn)
            self._dropped.append(turn.index)
            self._first_kept += 1
            if self.count(self.assemble(system, task, turns, notepad, note)) <= target:
                break
        return newly


def summary_request(task: str, turns: Sequence[Turn], previous: str | None, max_chars: int) -> str:
    """The user message asking for a summary of `turns` (each turn cut to its share of `max_chars`)."""
    share = max(200, max_chars // max(1, len(turns)))
    parts = [task]
    if previous:
        parts.append(f"Summary of even earlier steps:\n{previous}")
    for turn in turns:
        body = f"{turn.assistant}\n{turn.observation}"
        if len(body) > share:
            body = body[: share // 2] + "\n[...]\n" + body[-share // 2 :]
        parts.append(f"Step {turn.index + 1}:\n{body}")
    return "\n\n".join(parts)
