"""`OpenAIModel`: an OpenAI-compatible chat endpoint (OpenAI, vLLM, SGLang, llama.cpp servers)."""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import aiohttp
import httpx2
import openai

from nbagent.errors import ConfigError
from nbagent.models.base import ChatMessage, ModelError
from nbagent.models.endpoint import EndpointModel, Response, sampling_fields
from nbagent.models.recording import api_error_message
from nbagent.models.retry import RetryPolicy, status_code
from nbagent.trajectory import SamplingSettings

logger = logging.getLogger(__name__)

OPENAI_DEFAULT_URL = "https://api.openai.com/v1"
_SERVER_FIELDS = ("return_token_ids", "logprobs", "continue_final_message", "add_generation_prompt")
_REJECTION_WORDS = ("unrecognized", "unknown", "not permitted", "extra inputs", "unexpected", "not supported")
_CONTEXT_OVERFLOW = re.compile(
    r"maximum context length is \d+ tokens\. However, you requested \d+ output tokens"
)
"""vLLM's refusal of a reply budget that does not fit its context after the prompt (the prompt count in
it is only a lower bound, so the room left cannot be computed from it)."""


def default_base_url() -> str | None:
    """The endpoint configured in the environment: `NBAGENT_BASE_URL`, else `OPENAI_BASE_URL`."""
    return os.environ.get("NBAGENT_BASE_URL") or os.environ.get("OPENAI_BASE_URL") or None


def _is_openai_com(url: str) -> bool:
    host = urlparse(url).hostname or ""
    return host == "openai.com" or host.endswith(".openai.com")


class OpenAIModel(EndpointModel):
    """A chat model behind an OpenAI-compatible `/v1/chat/completions` endpoint.

    Args:
        model: The model name the server serves (for vLLM: `--served-model-name`, or a LoRA adapter name).
        base_url: Endpoint ending in `/v1`; default `NBAGENT_BASE_URL`, `OPENAI_BASE_URL`, then OpenAI's.
        api_key: Default `NBAGENT_API_KEY`, then `OPENAI_API_KEY`; local servers need none.
        max_retries: Retries of a transient failure (429, 5xx, connection error, timeout).
        backoff_s: First backoff; it doubles per retry (with jitter) up to `max_backoff_s`.
        timeout: Seconds per request.
        request_token_ids: Ask for vLLM's token ids and per-token logprobs. `"auto"`: on except for
            api.openai.com. A server that rejects the extra fields with a 400 is asked again without
            them, and remembered.
        tokenizer: A model folder, hub name or loaded tokenizer: enables `count_tokens`.
        policy_version: Recorded in `info` (the trainer sets it per published checkpoint).
    """

    provider = "openai"
    checklist = (
        "Check that the server is running and reachable, that base_url ends with /v1 "
        "(e.g. http://127.0.0.1:8000/v1), and the API key (NBAGENT_API_KEY / OPENAI_API_KEY)."
    )
    key_hint = "set NBAGENT_API_KEY or OPENAI_API_KEY, or pass api_key="

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        max_retries: int = 4,
        backoff_s: float = 0.5,
        max_backoff_s: float = 20.0,
        timeout: float = 300.0,
        request_token_ids: bool | Literal["auto"] = "auto",
        tokenizer: str | Path | Any | None = None,
        policy_version: int | str | None = None,
        default_headers: Mapping[str, str] | None = None,
    ) -> None:
        url = (base_url or default_base_url() or OPENAI_DEFAULT_URL).rstrip("/")
        super().__init__(
            model,
            base_url=url,
            retry=RetryPolicy(max_retries, backoff_s, max_backoff_s),
            tokenizer=tokenizer,
            policy_version=policy_version,
        )
        official = _is_openai_com(url)
        key = api_key or os.environ.get("NBAGENT_API_KEY") or os.environ.get("OPENAI_API_KEY")
        if not key:
            if official:
                raise ConfigError(
                    f"No API key for {url}: set OPENAI_API_KEY (or NBAGENT_API_KEY), pass "
                    "api_key=, or point base_url / NBAGENT_BASE_URL at your own server."
                )
            key = "EMPTY"  # local servers (vLLM without --api-key) accept any key
        self._want_token_ids = (not official) if request_token_ids == "auto" else bool(request_token_ids)
        self._server_fields_ok = not official
        """vLLM's extra request fields are accepted; set False when the server rejected them."""
        self._client = openai.AsyncOpenAI(
            base_url=url,
            api_key=key,
            max_retries=0,
            timeout=timeout,
            default_headers=default_headers,
            http_client=_http_client(),
        )

    @property
    def sends_server_fields(self) -> bool:
        """Whether vLLM's extra fields (token ids, prefill continuation) are still being sent."""
        return self._server_fields_ok

    async def aclose(self) -> None:
        await self._client.close()

    async def list_models(self) -> list[str]:
        """The model names the server lists at `/v1/models` (one try, no retries)."""
        try:
            page = await self._client.models.list()
        except openai.APITimeoutError as exc:
            raise _refused_as_connection_error(exc) from exc.__cause__
        return [entry.id for entry in page.data]

    async def _send(
        self, sent: list[ChatMessage], settings: SamplingSettings, prefill: str | None
    ) -> Response:
        """One request; when the server says the reply's `max_tokens` does not fit its context after
        this prompt (vLLM), once more without `max_tokens`, so the reply gets the (smaller) room left."""
        try:
            return await self._send_with_fields(sent, settings, prefill)
        except openai.BadRequestError as exc:
            if settings.max_tokens is None or not _CONTEXT_OVERFLOW.search(api_error_message(exc)):
                raise
            logger.warning(
                "%s: max_tokens=%d does not fit the context after this prompt; asking for the room left.",
                self.where,
                settings.max_tokens,
            )
            unbounded = settings.model_copy(update={"max_tokens": None})
            return await self._send_with_fields(sent, unbounded, prefill)

    async def _send_with_fields(
        self, sent: list[ChatMessage], settings: SamplingSettings, prefill: str | None
    ) -> Response:
        """One request; when the server rejects vLLM's extra fields, once more without them."""
        with_fields = self._server_fields_ok
        try:
            return await self._post(sent, settings, prefill, with_fields)
        except openai.BadRequestError as exc:
            if not with_fields or not _mentions_rejected_field(exc):
                raise
            data = await self._post(sent, settings, prefill, False)
            self._server_fields_ok = False
            logger.warning(
                "%s rejected vLLM's extra request fields (%s); sending without them from now on: no token "
                "ids or logprobs will be recorded%s.",
                self.base_url,
                api_error_message(exc),
                ", and an assistant prefill depends on the server's own handling" if prefill else "",
            )
            return data

    async def _post(
        self, sent: list[ChatMessage], settings: SamplingSettings, prefill: str | None, with_fields: bool
    ) -> Response:
        request: dict[str, Any] = {"model": self.model, "messages": sent, **sampling_fields(settings)}
        extra_body: dict[str, Any] = {}
        if with_fields and self._want_token_ids:
            request["logprobs"] = True
            request["top_logprobs"] = 0
            extra_body["return_token_ids"] = True
        if with_fields and prefill:
            extra_body["continue_final_message"] = True
            extra_body["add_generation_prompt"] = False
        extra_body.update(settings.extra)
        # A plain POST: the SDK's request transform and response models cost more CPU per call than
        # the rest of an agent step, and the recorder reads the body as a dict anyway.
        started = time.perf_counter()
        try:
            text = await self._client.post("/chat/completions", body={**request, **extra_body}, cast_to=str)
        except openai.APITimeoutError as exc:
            raise _refused_as_connection_error(exc) from exc.__cause__
        return completion_body(text, self.where), time.perf_counter() - started

    async def _explain(self, exc: openai.APIStatusError) -> str:
        """Like the base class, and for a 404 the models the server does serve, when it lists them."""
        if status_code(exc) == 404:
            try:
                served = await self.list_models()
            except openai.APIError:
                served = None
            if served is not None and self.model not in served:
                listed = ", ".join(served) if served else "none"
                return f"{self.where}: the server does not serve model {self.model!r}; it serves: {listed}."
        return await super()._explain(exc)


def _http_client() -> openai.DefaultAioHttpClient:
    """The SDK on aiohttp's connection pool instead of httpx's, which checks every idle connection on
    each request: at a thousand requests in flight, about 4 ms of CPU per request against 1.2 ms
    (`benchmarks/model_client.py`). No limit on connections (aiohttp's ``limit=0``): episodes and
    ``max_inflight_requests`` bound the requests. Proxies from the environment are honoured."""
    return openai.DefaultAioHttpClient(limits=httpx2.Limits(max_connections=0))


def _refused_as_connection_error(exc: openai.APITimeoutError) -> openai.APIError:
    """The SDK's aiohttp transport reports a refused or unreachable connection as a connect timeout;
    as what it is, an `APIConnectionError` (a real timeout stays one)."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, aiohttp.ClientConnectorError):
        cause = cause.__cause__
    if cause is None or isinstance(cause, aiohttp.ServerTimeoutError):
        return exc
    return openai.APIConnectionError(request=exc.request)


def completion_body(text: str, where: str) -> dict[str, Any]:
    """The JSON object of a chat-completion response; `ModelError` naming the server if it is not one."""
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise ModelError(
            f"{where}: the answer to /chat/completions is not a JSON object, so this is probably not an "
            f"OpenAI-compatible endpoint (check base_url). It began with: {text[:200]!r}"
        )
    return data


def _mentions_rejected_field(exc: openai.BadRequestError) -> bool:
    text = f"{api_error_message(exc)} {exc}".lower()
    return any(name in text for name in _SERVER_FIELDS) or any(word in text for word in _REJECTION_WORDS)
