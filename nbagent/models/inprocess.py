"""`TransformersModel`: a Hugging Face causal LM run in this process (torch and transformers load lazily).

Sampling is done here, token by token with a KV cache, so the record is exact: the prompt ids come from
the chat template (continuing a prefill the way vLLM does), and each completion token carries the
logprob of the distribution it was drawn from (logits / temperature, then top-k / top-p), which is what
vLLM reports with `--logprobs-mode processed_logprobs`. Generation runs in a worker thread.

On CPU, Llama-family models run on `FastDecoder` (int8 weights for decoding, bf16 for prefill, the KV
cache of the last call reused for the longest common prefix); other models, and `engine="hf"`, run
HF's own forward token by token. A PEFT LoRA adapter (`adapter=`) is merged into the base on load.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from nbagent.errors import ConfigError
from nbagent.models.base import ChatMessage, ModelError
from nbagent.models.chat_tokenizer import ChatTokenizer, with_prefill
from nbagent.models.fast_decoder import FastDecoder, unsupported_reason
from nbagent.trajectory import ModelCall, ModelInfo, SamplingSettings, Usage

logger = logging.getLogger(__name__)

SUPPORTED_EXTRA = frozenset({"top_k"})
Engine = Literal["auto", "hf"]
ENGINES: tuple[Engine, ...] = ("auto", "hf")


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
        name: Recorded as the model name (default: the adapter's or the model's folder name).
        adapter: A PEFT LoRA adapter folder (adapter_config.json, adapter_model.safetensors), merged
            into the weights on load; needs a model folder, not a loaded model.
        engine: `"auto"` runs `FastDecoder` when it supports the model (Llama / Qwen2 on CPU; a
            loaded model's weights are copied when first used), `"hf"` always runs HF's forward.
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
        adapter: str | Path | None = None,
        engine: Engine = "auto",
    ) -> None:
        if engine not in ENGINES:
            raise ConfigError(f"TransformersModel engine must be one of {list(ENGINES)}, not {engine!r}.")
        if isinstance(path_or_model, str | Path):
            self._source: str | None = str(path_or_model)
            self._model: Any = None
        else:
            self._source = None
            self._model = path_or_model
        origin = self._source or str(getattr(path_or_model, "name_or_path", "") or "")
        if tokenizer is None and not origin:
            raise ConfigError("TransformersModel got a model object without a name_or_path: pass tokenizer=.")
        if adapter is not None and self._source is None:
            raise ConfigError("TransformersModel(adapter=...) needs a model folder, not a loaded model.")
        self.adapter = Path(adapter) if adapter is not None else None
        self.name = name or (self.adapter or Path(origin)).name or "local"
        self.device = device
        self.dtype = dtype
        self.max_new_tokens = max_new_tokens
        self.engine = engine
        self.tokenizer = ChatTokenizer(tokenizer if tokenizer is not None else origin)
        self._decoder: FastDecoder | None = None
        self._prepared = False  # whether the engine is chosen (and the fast decoder built)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TransformersModel({self._source or self.name!r})"

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(provider=self.provider, model=self.name)

    def count_tokens(self, messages: list[ChatMessage]) -> int | None:
        return self.tokenizer.count(messages)

    @property
    def active_engine(self) -> Literal["fast", "hf"] | None:
        """The engine generating tokens: `"fast"` (`FastDecoder`) or `"hf"`; None until loaded."""
        if not self._prepared:
            return None
        return "fast" if self._decoder is not None else "hf"

    @property
    def reused_prompt_tokens(self) -> int:
        """How many prompt tokens of the last call the fast decoder took from its cache (else 0)."""
        return self._decoder.reused if self._decoder is not None else 0

    async def aclose(self) -> None:
        self._decoder = None
        self._prepared = False
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
        if self._model is None:
            self._model = self._load_weights()
        if self._prepared:
            return self._model
        self._prepared = True
        if self.engine == "auto":
            reason = unsupported_reason(self._model)
            if reason is None:
                started = time.perf_counter()
                self._decoder = FastDecoder(self._model)
                logger.debug("%s: fast decoder built in %.1f s", self.name, time.perf_counter() - started)
            else:
                logger.info(
                    "%s: generating with the HF forward; the fast decoder does not support %s",
                    self.name,
                    reason,
                )
        return self._model

    def _load_weights(self) -> Any:
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
        if self.adapter is not None:
            model = _merge_adapter(model, self.adapter)
        return model.to(device).eval()

    def _sample(self, model: Any, prompt_ids: list[int], settings: SamplingSettings) -> _Sampled:
        import torch

        room = int(getattr(model.config, "max_position_embeddings", 1 << 30)) - len(prompt_ids)
        if room <= 0:
            raise ModelError(
                f"The prompt has {len(prompt_ids)} tokens, at or over {self.name}'s context of "
                f"{len(prompt_ids) + room}; shorten the conversation (context_budget_tokens)."
            )
        limit = min(settings.max_tokens or self.max_new_tokens, room)
        stepper: FastDecoder | _HFStepper = self._decoder or _HFStepper(model)
        generator = torch.Generator(device=next(model.parameters()).device)
        if settings.seed is not None:
            generator.manual_seed(settings.seed)
        else:
            generator.seed()
        stops = _StopScanner(self.tokenizer, [s for s in settings.stop or [] if s])
        end_ids = self._end_ids(model)
        ids: list[int] = []
        logprobs: list[float] = []
        with torch.inference_mode():
            logits = stepper.start(prompt_ids)
            if self._decoder is not None:
                logger.debug(
                    "%s: %d of %d prompt tokens from the cache",
                    self.name,
                    self._decoder.reused,
                    len(prompt_ids),
                )
            while True:
                token, logprob = _draw(logits, settings, generator)
                ids.append(token)
                logprobs.append(logprob)
                if token in end_ids:
                    return _Sampled(ids, logprobs, self._decode(ids), "stop")
                if stops.found(ids):
                    text = self._decode(ids)
                    cut = stops.first_in(text)
                    if cut is not None:
                        return _Sampled(ids, logprobs, text[:cut], "stop")
                if len(ids) == limit:
                    return _Sampled(ids, logprobs, self._decode(ids), "length")
                logits = stepper.step(token)

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

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


class _HFStepper:
    """The HF model's own forward with its KV cache, one call at a time (no reuse across calls)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.past: Any = None

    def start(self, ids: list[int]) -> Any:
        self.past = None
        return self._forward(ids)

    def step(self, token: int) -> Any:
        return self._forward([token])

    def _forward(self, ids: list[int]) -> Any:
        import torch

        output = self.model(
            input_ids=torch.tensor([ids], device=self.device), past_key_values=self.past, use_cache=True
        )
        self.past = output.past_key_values
        return output.logits[0, -1].float()


class _StopScanner:
    """Spots stop strings in a growing completion, decoding only its newest tokens at each step.

    The decoded text grows by the difference between the text of the tokens since the previous step's
    start and that of the tokens before (HF's and vLLM's incremental detokenization), held back while it
    ends in an incomplete character.
    """

    def __init__(self, tokenizer: ChatTokenizer, stops: list[str]) -> None:
        self.tokenizer = tokenizer
        self.stops = stops
        self.longest = max((len(s) for s in stops), default=0)
        self.text = ""
        self._prefix = self._read = 0

    def found(self, ids: list[int]) -> bool:
        """Whether a stop string ends in the text that `ids` (the whole completion so far) added."""
        if not self.stops:
            return False
        before = self.tokenizer.decode(ids[self._prefix : self._read], skip_special_tokens=True)
        after = self.tokenizer.decode(ids[self._prefix :], skip_special_tokens=True)
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return False
        self._prefix, self._read = self._read, len(ids)
        scan_from = max(0, len(self.text) - self.longest + 1)
        self.text += after[len(before) :]
        return any(stop in self.text[scan_from:] for stop in self.stops)

    def first_in(self, text: str) -> int | None:
        """Where the earliest stop string starts in `text`, if any does."""
        return min((i for i in (text.find(s) for s in self.stops) if i >= 0), default=None)


def _merge_adapter(model: Any, adapter: Path) -> Any:
    """`model` with the PEFT LoRA adapter in the folder `adapter` merged into its weights."""
    if not (adapter / "adapter_config.json").is_file():
        raise ConfigError(f"{adapter} is not a PEFT adapter folder (it has no adapter_config.json).")
    try:
        from peft import PeftModel
    except ImportError as exc:
        raise ConfigError(
            "Loading a LoRA adapter needs peft, part of the `local` extra: `pip install 'nbagent[local]'`."
        ) from exc
    try:
        return PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    except Exception as exc:  # peft and safetensors raise many kinds for a broken folder
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"Could not load the LoRA adapter {adapter}: {reason}") from exc


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
