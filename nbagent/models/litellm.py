"""`LiteLLMModel`: the providers LiteLLM reaches (Anthropic, Gemini, Bedrock, ...); litellm loads lazily."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from nbagent.errors import ConfigError
from nbagent.models.base import ChatMessage
from nbagent.models.endpoint import EndpointModel, Response, sampling_fields, timed
from nbagent.models.retry import RetryPolicy
from nbagent.trajectory import SamplingSettings


def _import_litellm() -> Any:
    # Without this, importing litellm tries to download a price table (tens of seconds offline).
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    try:
        import litellm
    except ImportError as exc:
        raise ConfigError(
            "LiteLLMModel needs the `litellm` extra: `pip install 'nbagent[litellm]'`."
        ) from exc
    litellm.suppress_debug_info = True  # our ModelError explains failures; no "Give Feedback" banners
    return litellm


class LiteLLMModel(EndpointModel):
    """A chat model through `litellm.acompletion` (model names like ``anthropic/claude-sonnet-4-5``).

    Records the completion text, finish reason, usage, latency and (with `request_logprobs`) per-token
    logprobs; token ids only when the provider returns vLLM's fields. An assistant prefill is sent as the
    last message, which providers such as Anthropic continue. Retries and errors work as in `OpenAIModel`;
    LiteLLM's own retries are off.

    Args:
        model: LiteLLM model string.
        api_base, api_key: Passed to LiteLLM (it otherwise reads the provider's usual variables).
        request_logprobs: Ask for per-token logprobs (not every provider has them).
        litellm_kwargs: More `acompletion` arguments, passed through.
    """

    provider = "litellm"
    checklist = "Check the provider's status, the model name, and its API key variable."

    def __init__(
        self,
        model: str,
        *,
        api_base: str | None = None,
        api_key: str | None = None,
        max_retries: int = 4,
        backoff_s: float = 0.5,
        max_backoff_s: float = 20.0,
        timeout: float = 300.0,
        request_logprobs: bool = False,
        tokenizer: str | Path | Any | None = None,
        policy_version: int | str | None = None,
        **litellm_kwargs: Any,
    ) -> None:
        super().__init__(
            model,
            base_url=api_base,
            retry=RetryPolicy(max_retries, backoff_s, max_backoff_s),
            tokenizer=tokenizer,
            policy_version=policy_version,
        )
        self.api_key = api_key
        self.timeout = timeout
        self.request_logprobs = request_logprobs
        self.litellm_kwargs = litellm_kwargs

    async def _send(
        self, sent: list[ChatMessage], settings: SamplingSettings, prefill: str | None
    ) -> Response:
        litellm = _import_litellm()
        request: dict[str, Any] = {
            "model": self.model,
            "messages": sent,
            "timeout": self.timeout,
            "num_retries": 0,
            **sampling_fields(settings),
            **self.litellm_kwargs,
            **settings.extra,
        }
        if self.base_url:
            request["api_base"] = self.base_url
        if self.api_key:
            request["api_key"] = self.api_key
        if self.request_logprobs:
            request["logprobs"] = True
        return await timed(litellm.acompletion(**request))
