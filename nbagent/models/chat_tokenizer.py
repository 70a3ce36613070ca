"""A Hugging Face tokenizer with a chat template, loaded on first use (transformers is imported lazily)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from nbagent.errors import ConfigError
from nbagent.models.base import ChatMessage


def with_prefill(messages: list[ChatMessage], prefill: str | None) -> list[ChatMessage]:
    """The messages to send: `messages`, plus the started assistant turn when there is a prefill."""
    if not prefill:
        return list(messages)
    return [*messages, {"role": "assistant", "content": prefill}]


class ChatTokenizer:
    """Token ids of chat prompts and completions, the way an OpenAI-compatible server (vLLM) computes them.

    `source` is a model folder or hub name for `AutoTokenizer.from_pretrained`, or a loaded tokenizer.
    """

    def __init__(self, source: str | Path | Any) -> None:
        self._source = source
        self._loaded: Any = None if isinstance(source, str | Path) else source
        self._lock = threading.Lock()

    @property
    def tokenizer(self) -> Any:
        """The underlying transformers tokenizer (loaded on first access)."""
        if self._loaded is None:
            with self._lock:
                if self._loaded is None:
                    self._loaded = _load_tokenizer(self._source)
        return self._loaded

    @property
    def eos_token_id(self) -> int | None:
        token_id = self.tokenizer.eos_token_id
        return int(token_id) if token_id is not None else None

    def prompt_ids(self, messages: list[ChatMessage], prefill: str | None = None) -> list[int]:
        """Ids of the chat-templated prompt: with a generation prompt, or continuing the prefill."""
        if prefill:
            rendered = self.tokenizer.apply_chat_template(
                with_prefill(messages, prefill),
                tokenize=False,
                continue_final_message=True,
                add_generation_prompt=False,
            )
        else:
            rendered = self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        return self.encode(str(rendered))

    def count(self, messages: list[ChatMessage]) -> int:
        """Tokens of `messages` rendered with a generation prompt."""
        return len(self.prompt_ids(messages))

    def encode(self, text: str) -> list[int]:
        """Ids of `text` as written (special tokens in the text are recognised, none are added)."""
        return [int(i) for i in self.tokenizer.encode(text, add_special_tokens=False)]

    def decode(self, ids: list[int], *, skip_special_tokens: bool = False) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens))


def _load_tokenizer(source: str | Path) -> Any:
    try:
        from transformers import AutoTokenizer
    except ImportError as exc:
        raise ConfigError(
            "A tokenizer needs the `local` extra (transformers): `pip install 'nbagent[local]'`."
        ) from exc
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(source))
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"Could not load a tokenizer from {source!s}: {exc}. Pass a model folder that holds "
            "tokenizer.json / tokenizer_config.json (or a loaded tokenizer)."
        ) from exc
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(f"The tokenizer of {source!s} has no chat template; use an instruct/chat model.")
    return tokenizer
