"""Turning an OpenAI-shaped chat completion (OpenAI, vLLM, LiteLLM) into the `ModelCall` record."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nbagent.models.base import ChatMessage, ModelError
from nbagent.trajectory import ModelCall, Usage


def record_chat_completion(
    data: Mapping[str, Any],
    *,
    messages: list[ChatMessage],
    prefill: str | None,
    latency_s: float,
) -> ModelCall:
    """The `ModelCall` for a chat-completion response body (a plain dict).

    Token ids are taken from vLLM's fields (`prompt_token_ids`, `choices[0].token_ids`) and logprobs
    from `choices[0].logprobs.content`, when the server returned them.
    """
    choices = data.get("choices") or []
    if not choices:
        raise ModelError(
            f"The server answered without any choice (model {data.get('model')!r}): {data!r:.300}"
        )
    choice = choices[0]
    message = choice.get("message") or {}
    logprobs = (choice.get("logprobs") or {}).get("content")
    usage = data.get("usage")
    return ModelCall(
        messages=messages,
        prefill=prefill,
        completion=message.get("content") or "",
        prompt_token_ids=_ids(data.get("prompt_token_ids")),
        completion_token_ids=_ids(choice.get("token_ids")),
        completion_logprobs=[float(entry["logprob"]) for entry in logprobs] if logprobs else None,
        finish_reason=choice.get("finish_reason"),
        usage=Usage(
            prompt_tokens=usage.get("prompt_tokens") or 0,
            completion_tokens=usage.get("completion_tokens") or 0,
            total_tokens=usage.get("total_tokens") or 0,
        )
        if usage
        else None,
        latency_s=latency_s,
        model=data.get("model"),
    )


def _ids(value: Any) -> list[int] | None:
    return [int(i) for i in value] if isinstance(value, list) else None


def api_error_message(exc: BaseException) -> str:
    """The server's own explanation inside an API error, else the error's text."""
    body = getattr(exc, "body", None)
    if isinstance(body, Mapping):
        inner = body.get("error")
        if isinstance(inner, Mapping) and inner.get("message"):
            return str(inner["message"])
        if body.get("message"):
            return str(body["message"])
        if body.get("detail"):
            return str(body["detail"])
    message = getattr(exc, "message", None)
    return str(message or exc)
