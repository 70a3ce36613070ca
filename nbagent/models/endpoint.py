"""What remote chat models share: retries, error explanations, recording, token counting."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import openai

from nbagent.models.base import ChatMessage, ModelError
from nbagent.models.chat_tokenizer import ChatTokenizer, with_prefill
from nbagent.models.recording import api_error_message, record_chat_completion
from nbagent.models.retry import RetriesExhausted, RetryPolicy, call_with_retries, status_code
from nbagent.trajectory import ModelCall, ModelInfo, SamplingSettings

Response = tuple[dict[str, Any], float]
"""A chat-completion body as a plain dict, and the request's latency in seconds."""


async def timed(request: Awaitable[Any]) -> Response:
    """Await an SDK call that returns a pydantic response; return its dict and how long it took."""
    started = time.perf_counter()
    response = await request
    return response.model_dump(), time.perf_counter() - started


class EndpointModel(ABC):
    """Base of models behind an HTTP API: `complete` retries transient failures, then explains the rest.

    Subclasses implement `_send` (one request) and may refine `_explain` and `checklist`.
    """

    provider = "endpoint"
    checklist = "Check that the service is reachable and the API key is set."
    """Appended to the error raised when every retry failed."""
    key_hint = "set the provider's API key variable or pass api_key="

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None,
        retry: RetryPolicy,
        tokenizer: str | Path | Any | None,
        policy_version: int | str | None,
    ) -> None:
        self.model = model
        self.base_url = base_url
        self.retry = retry
        self.policy_version = policy_version
        self._tokenizer = None if tokenizer is None else ChatTokenizer(tokenizer)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model!r}, base_url={self.base_url!r})"

    @property
    def where(self) -> str:
        """How error messages name this model."""
        return f"{self.model} at {self.base_url}" if self.base_url else self.model

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(
            provider=self.provider,
            model=self.model,
            base_url=self.base_url,
            policy_version=self.policy_version,
        )

    def count_tokens(self, messages: list[ChatMessage]) -> int | None:
        return self._tokenizer.count(messages) if self._tokenizer is not None else None

    async def aclose(self) -> None:
        return None

    async def complete(
        self,
        messages: list[ChatMessage],
        settings: SamplingSettings,
        *,
        prefill: str | None = None,
    ) -> ModelCall:
        prefill = prefill or None
        sent = with_prefill(messages, prefill)
        try:
            data, latency = await call_with_retries(
                lambda: self._send(sent, settings, prefill), self.retry, what=self.where
            )
        except RetriesExhausted as exc:
            raise ModelError(
                f"{self.where}: no answer after {exc.attempts} tries "
                f"(last: {type(exc.last).__name__}: {api_error_message(exc.last)}). {self.checklist}"
            ) from exc.last
        except openai.APIStatusError as exc:  # litellm's errors derive from openai's too
            raise ModelError(await self._explain(exc)) from exc
        return record_chat_completion(data, messages=sent, prefill=prefill, latency_s=latency)

    @abstractmethod
    async def _send(
        self, sent: list[ChatMessage], settings: SamplingSettings, prefill: str | None
    ) -> Response:
        """One request: the response body and its latency."""

    async def _explain(self, exc: openai.APIStatusError) -> str:
        """A one-paragraph explanation of a non-retryable HTTP error, with what to do about it."""
        code = status_code(exc)
        said = api_error_message(exc)
        if code in (401, 403):
            return f"{self.where}: the API key was refused (HTTP {code}: {said}); {self.key_hint}."
        if code == 404:
            return f"{self.where}: not found (HTTP 404: {said}). {self.checklist}"
        return f"{self.where}: the request was rejected (HTTP {code}): {said}"


def sampling_fields(settings: SamplingSettings) -> dict[str, Any]:
    """The OpenAI request fields of the settings that are set."""
    fields = ("temperature", "top_p", "max_tokens", "stop", "seed")
    return {name: getattr(settings, name) for name in fields if getattr(settings, name) is not None}
