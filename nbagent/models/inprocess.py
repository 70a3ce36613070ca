"""`TransformersModel`: a Hugging Face causal LM run in this process (torch and transformers load lazily).

Sampling is done here, token by token with a KV cache, so the record is exact: the prompt ids come from
the chat template (continuing a prefill the way vLLM does), and each completion token carries the
logprob of the distribution it was drawn from (logits / temperature, then top-k / top-p), which is what
vLLM reports with `--logprobs-mode processed_logprobs`. Generation runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbagent.errors import ConfigError
from nbagent.models.base import ChatMessage, ModelError
from nbagent.models.chat_tokenizer import ChatTokenizer, with_prefill
from nbagent.trajectory import ModelCall, ModelInfo, SamplingSettings, Usage

SUPPORTED_EXTRA = frozenset({"top_k"})


@dataclass
class _Sampled:
    ids: list[int]
    logprobs: list[float]
    text: str
    finish_reason: str


class TransformersModel:
    """A local chat model, in-process.

    Args:
        path_or_model: A model folder / hub name, or a loaded `PreTrainedModel`.
        tokenizer: Defaults to the model's own (its folder or `name_or_path`).
        device: `"cpu"`, `"cuda"`, ...; default: CUDA when available, else CPU.
        dtype: torch dtype name for loading (`"float32"`, `"bfloat16"`); default: the checkpoint's.
        max_new_tokens: Used when the settings give no `max_tokens` (an `Agent` always gives one).
        name: Recorded as the model name (default: the folder's name).
    """

    provider = "local"

    def __init__(
        self,
        path_or_model: str | Path | Any,
        *,
        tokenizer: str | Path | Any | None = None,
        device: str | None = None,
        dtype: str | None = None,
        max_new_tokens: int = 1024,
        name: str | None = None,
    ) -> None:
        if isinstance(path_or_model, str | Path):
            self._source: str | None = str(path_or_model)
            self._model: Any = None
        else:
            self._source = None
            self._model = path_or_model
        origin = self._source or str(getattr(path_or_model, "name_or_path", "") or "")
        if tokenizer is None and not origin:
            raise ConfigError("TransformersModel got a model object without a name_or_path: pass tokenizer=.")
        self.name = name or Path(origin).name or "local"
        self.device = device
        self.dtype = dtype
        self.max_new_tokens = max_new_tokens
        self.tokenizer = ChatTokenizer(tokenizer if tokenizer is not None else origin)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TransformersModel({self._source or self.name!r})"

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(provider=self.provider, model=self.name)

    def count_tokens(self, messages: list[ChatMessage]) -> int | None:
        return self.tokenizer.count(messages)

    async def aclose(self) -> None:
        if self._source is not None:
            self._model = None  # loaded by us: let it be freed

    def load(self) -> Any:
        """Load the weights now (otherwise the first `complete` does); returns the torch model."""
        with self._lock:
            return self._loaded()

    async def complete(
        self,
        messages: list[ChatMessage],
        settings: SamplingSettings,
        *,
        prefill: str | None = None,
    ) -> ModelCall:
        prefill = prefill or None
        unsupported = sorted(set(settings.extra) - SUPPORTED_EXTRA)
        if unsupported:
            raise ModelError(
                f"TransformersModel does not support the sampling option(s) {unsupported}; "
                f"it supports temperature, top_p, max_tokens, stop, seed and extra {sorted(SUPPORTED_EXTRA)}."
            )
        started = time.perf_counter()
        prompt_ids, sampled = await asyncio.to_thread(self._run, messages, prefill, settings)
        return ModelCall(
            messages=with_prefill(messages, prefill),
            prefill=prefill,
            completion=sampled.text,
            prompt_token_ids=prompt_ids,
            completion_token_ids=sampled.ids,
            completion_logprobs=sampled.logprobs,
            finish_reason=sampled.finish_reason,
            usage=Usage(
                prompt_tokens=len(prompt_ids),
                completion_tokens=len(sampled.ids),
                total_tokens=len(prompt_ids) + len(sampled.ids),
            ),
            latency_s=time.perf_counter() - started,
            model=self.name,
        )

    # ---------------------------------------------------------------------------------------------
    # In the worker thread
    # ---------------------------------------------------------------------------------------------

    def _run(
        self, messages: list[ChatMessage], prefill: str | None, settings: SamplingSettings
    ) -> tuple[list[int], _Sampled]:
        with self._lock:
            model = self._loaded()
            prompt_ids = self.tokenizer.prompt_ids(messages, prefill)
            return prompt_ids, self._sample(model, prompt_ids, settings)

    def _loaded(self) -> Any:
        if self._model is not None:
            return self._model
        try:
            import torch
            from transformers import AutoModelForCausalLM
        except ImportError as exc:
            raise ConfigError(
                "TransformersModel needs the `local` extra (torch, transformers): "
                "`pip install 'nbagent[local]'`."
            ) from exc
        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        auto_model: Any = AutoModelForCausalLM  # untyped classmethod
        try:
            model = auto_model.from_pretrained(self._source, dtype=self.dtype or "auto")
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"Could not load a causal LM from {self._source}: {exc}. Pass an HF model folder "
                "(config.json, *.safetensors, tokenizer files)."
            ) from exc
        self._model = model.to(device).eval()
        return self._model

    def _sample(self, model: Any, prompt_ids: list[int], settings: SamplingSettings) -> _Sampled:
        import torch

        device = next(model.parameters()).device
        room = int(getattr(model.config, "max_position_embeddings", 1 << 30)) - len(prompt_ids)
        if room <= 0:
            raise ModelError(
                f"The prompt has {len(prompt_ids)} tokens, at or over {self.name}'s context of "
                f"{len(prompt_ids) + room}; shorten the conversation (context_budget_tokens)."
            )
        limit = min(settings.max_tokens or self.max_new_tokens, room)
        generator = torch.Generator(device=device)
        if settings.seed is not None:
            generator.manual_seed(settings.seed)
        else:
            generator.seed()
        stops = [s for s in settings.stop or [] if s]
        end_ids = self._end_ids(model)
        ids: list[int] = []
        logprobs: list[float] = []
        next_input = torch.tensor([prompt_ids], device=device)
        past: Any = None
        with torch.inference_mode():
            for _ in range(limit):
                output = model(input_ids=next_input, past_key_values=past, use_cache=True)
                past = output.past_key_values
                token, logprob = _draw(output.logits[0, -1].float(), settings, generator)
                ids.append(token)
                logprobs.append(logprob)
                if token in end_ids:
                    return _Sampled(
                        ids, logprobs, self.tokenizer.decode(ids, skip_special_tokens=True), "stop"
                    )
                if stops:
                    text = self.tokenizer.decode(ids, skip_special_tokens=True)
                    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
                    if cut >= 0:
                        return _Sampled(ids, logprobs, text[:cut], "stop")
                next_input = torch.tensor([[token]], device=device)
        return _Sampled(ids, logprobs, self.tokenizer.decode(ids, skip_special_tokens=True), "length")

    def _end_ids(self, model: Any) -> set[int]:
        ends: set[int] = set()
        eos = self.tokenizer.eos_token_id
        if eos is not None:
            ends.add(eos)
        configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        if isinstance(configured, int):
            ends.add(configured)
        elif isinstance(configured, list):
            ends.update(int(i) for i in configured)
        return ends


def _draw(logits: Any, settings: SamplingSettings, generator: Any) -> tuple[int, float]:
    """Pick the next token from the last position's logits; return it with its (processed) logprob.

    Temperature 0 is greedy and reports the plain log-softmax; otherwise the logprob is that of the
    distribution sampled from: logits / temperature, restricted to top-k and the top-p nucleus.
    """
    import torch

    temperature = 1.0 if settings.temperature is None else settings.temperature
    if temperature <= 0:
        token = int(torch.argmax(logits))
        return token, float(torch.log_softmax(logits, dim=-1)[token])
    scaled = logits / temperature
    top_k = settings.extra.get("top_k")
    if isinstance(top_k, int) and 0 < top_k < scaled.numel():
        kth = torch.topk(scaled, top_k).values[-1]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    if settings.top_p is not None and settings.top_p < 1.0:
        ordered, order = torch.sort(scaled, descending=True)
        probs = torch.softmax(ordered, dim=-1)
        outside = torch.cumsum(probs, dim=-1) - probs > settings.top_p
        scaled = scaled.scatter(0, order, ordered.masked_fill(outside, float("-inf")))
    logprobs = torch.log_softmax(scaled, dim=-1)
    token = int(torch.multinomial(logprobs.exp(), 1, generator=generator))
    return token, float(logprobs[token])
