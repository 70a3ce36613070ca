"""A model shared by many episodes, with a cap on the requests in flight at once."""

from __future__ import annotations

import anyio

from nbagent.errors import ConfigError
from nbagent.models.base import ChatMessage, Model
from nbagent.trajectory import ModelCall, ModelInfo, SamplingSettings


class BoundedModel:
    """A `Model` that lets at most `limit` requests be in flight at once (shared by every episode)."""

    def __init__(self, model: Model, limit: int) -> None:
        if limit < 1:
            raise ConfigError(f"max_inflight_requests must be at least 1, got {limit}")
        self.inner = model
        self.limit = limit
        self._semaphore = anyio.Semaphore(limit)
        self.in_flight = 0
        self.max_in_flight = 0

    @property
    def info(self) -> ModelInfo:
        return self.inner.info

    async def complete(
        self, messages: list[ChatMessage], settings: SamplingSettings, *, prefill: str | None = None
    ) -> ModelCall:
        async with self._semaphore:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                return await self.inner.complete(messages, settings, prefill=prefill)
            finally:
                self.in_flight -= 1

    def count_tokens(self, messages: list[ChatMessage]) -> int | None:
        return self.inner.count_tokens(messages)

    async def aclose(self) -> None:
        await self.inner.aclose()
