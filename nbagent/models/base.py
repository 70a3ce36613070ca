"""The model seam: anything that turns chat messages into a completion."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from nbagent.errors import NBAgentError
from nbagent.trajectory import ModelCall, ModelInfo, SamplingSettings

ChatMessage = dict[str, Any]


class ModelError(NBAgentError):
    """A model call failed for good (after retries); the message says what to check."""


@runtime_checkable
class Model(Protocol):
    """A chat model.

    `complete` sends `messages` and returns the `ModelCall` record of what happened. When `prefill` is
    given, the assistant turn is started with that text and the completion continues it (the recorded
    `completion` excludes the prefill; the prompt token ids include it).
    """

    @property
    def info(self) -> ModelInfo: ...

    async def complete(
        self,
        messages: list[ChatMessage],
        settings: SamplingSettings,
        *,
        prefill: str | None = None,
    ) -> ModelCall: ...

    def count_tokens(self, messages: list[ChatMessage]) -> int | None:
        """Tokens of `messages` with the model's tokenizer, or None when the tokenizer is unknown."""
        ...

    async def aclose(self) -> None: ...
