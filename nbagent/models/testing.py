"""Public test doubles: models that answer from a script or a function, deterministically.

Completions are returned verbatim (stop sequences are not applied) and every call is recorded in
`.calls`. Given a `tokenizer` (model folder, hub name or loaded tokenizer), the records also carry real
token ids: the chat-templated prompt (continuing a prefill, as vLLM does) and the completion's ids
followed by the end-of-turn token, so trainer tests can run on scripted episodes.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from nbagent.models.base import ChatMessage, ModelError
from nbagent.models.chat_tokenizer import ChatTokenizer, with_prefill
from nbagent.trajectory import ModelCall, ModelInfo, SamplingSettings, Usage

Reply = str | ModelCall
ReplyFunction = Callable[[list[ChatMessage], SamplingSettings], Reply | Awaitable[Reply]]


class _RecordingModel:
    """What both doubles share: naming, optional real token ids, and the record of calls."""

    provider = "test"

    def __init__(self, name: str, tokenizer: str | Path | Any | None) -> None:
        self.name = name
        self.calls: list[ModelCall] = []
        self._tokenizer = None if tokenizer is None else ChatTokenizer(tokenizer)

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(provider=self.provider, model=self.name)

    def count_tokens(self, messages: list[ChatMessage]) -> int | None:
        return self._tokenizer.count(messages) if self._tokenizer is not None else None

    async def aclose(self) -> None:
        return None

    def _record(self, reply: Reply, messages: list[ChatMessage], prefill: str | None) -> ModelCall:
        sent = with_prefill(messages, prefill)
        if isinstance(reply, ModelCall):
            call = reply.model_copy(update={"messages": sent, "prefill": prefill})
        else:
            call = ModelCall(
                messages=sent, prefill=prefill, completion=reply, finish_reason="stop", model=self.name
            )
            if self._tokenizer is not None:
                prompt_ids = self._tokenizer.prompt_ids(messages, prefill)
                completion_ids = self._tokenizer.encode(reply)
                eos = self._tokenizer.eos_token_id
                if eos is not None:
                    completion_ids.append(eos)
                call.prompt_token_ids = prompt_ids
                call.completion_token_ids = completion_ids
                call.usage = Usage(
                    prompt_tokens=len(prompt_ids),
                    completion_tokens=len(completion_ids),
                    total_tokens=len(prompt_ids) + len(completion_ids),
                )
        self.calls.append(call)
        return call


class ScriptedModel(_RecordingModel):
    """Returns `completions` in order, one per call; a `ModelCall` item is returned with the sent messages.

    Raises `ModelError` when the script has run out, saying how many calls it served.
    """

    provider = "scripted"

    def __init__(
        self,
        completions: Iterable[Reply],
        *,
        tokenizer: str | Path | Any | None = None,
        name: str = "scripted",
    ) -> None:
        super().__init__(name, tokenizer)
        self._script = list(completions)
        self._next = 0

    @property
    def remaining(self) -> int:
        """Completions not yet used."""
        return len(self._script) - self._next

    async def complete(
        self,
        messages: list[ChatMessage],
        settings: SamplingSettings,
        *,
        prefill: str | None = None,
    ) -> ModelCall:
        if self._next >= len(self._script):
            last = messages[-1].get("content") if messages else None
            raise ModelError(
                f"ScriptedModel ran out of completions: call {self._next + 1} asked for one, but the script "
                f"holds {len(self._script)}. Add more completions. Last message sent: {str(last)[:200]!r}"
            )
        reply = self._script[self._next]
        self._next += 1
        return self._record(reply, messages, prefill or None)


class FunctionModel(_RecordingModel):
    """Answers with `fn(messages, settings)` (sync or async), which returns the completion or a `ModelCall`.

    `fn` sees the messages as sent: with a prefill, the started assistant turn is the last message.
    """

    provider = "function"

    def __init__(
        self,
        fn: ReplyFunction,
        *,
        tokenizer: str | Path | Any | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(name or str(getattr(fn, "__name__", "function")), tokenizer)
        self.fn = fn

    async def complete(
        self,
        messages: list[ChatMessage],
        settings: SamplingSettings,
        *,
        prefill: str | None = None,
    ) -> ModelCall:
        prefill = prefill or None
        result = self.fn(with_prefill(messages, prefill), settings)
        reply = await result if inspect.isawaitable(result) else result
        if not isinstance(reply, str | ModelCall):
            raise ModelError(
                f"FunctionModel's function {self.name!r} returned {type(reply).__name__}; "
                "it must return the completion text (str) or a ModelCall."
            )
        return self._record(reply, messages, prefill)
