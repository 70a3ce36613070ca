"""Per-token log-probabilities of the completion region only, without the logits of any other position.

TRL's `add_fused_lm_head` scores only the labelled positions on Triton devices, but every position
elsewhere (so on a CPU a 1,000-token prompt costs 1,000 rows of full-vocabulary logits to score 50
completion tokens). Here the backbone's hidden states are cut to the last `C` positions (the micro-batch
layout puts every completion there) and then to the scored tokens, before the LM head; the projection,
log-softmax and entropy are TRL's `ChunkedLogProbFunction` (tiled over the vocabulary, recomputed in
backward), so the numbers are the ones `GRPOTrainer` computes.
"""

from __future__ import annotations

import functools
import types
from dataclasses import dataclass
from typing import Any

import torch
from transformers.utils.generic import ModelOutput

VOCAB_TILE = 8192
"""Vocabulary columns per projection tile: a tile holds (scored tokens, at most 4,096) x this many logits."""


@dataclass
class CompletionScores(ModelOutput):
    """What a patched model returns with `score_last=C`: (B, C) tensors, zero where the label is -100."""

    log_probs: torch.Tensor | None = None
    entropy: torch.Tensor | None = None


def add_completion_head(model: Any, *, temperature: float, entropy: bool) -> None:
    """Patch `model.forward` so that `model(..., labels=labels, score_last=C)` returns `CompletionScores`.

    `labels` are the input ids with -100 where nothing is scored; only their last `C` columns are read.
    Without `score_last` the forward is the original one. Patch before wrapping the model with PEFT.
    """
    from torch.distributed.tensor import DTensor
    from trl.kernels import ChunkedLogProbFunction
    from trl.trainer.utils import maybe_gather_lm_head_ctx

    original = model.forward
    text_config = model.config.get_text_config()
    softcap = getattr(text_config, "final_logit_softcapping", None)
    scale = getattr(text_config, "logit_scale", None)
    logit_scale = 1.0 if scale is None else float(scale)
    outputs = ("log_probs", "entropy") if entropy else ("log_probs",)

    @functools.wraps(type(model).forward)
    def forward(self: Any, *args: Any, score_last: int | None = None, **kwargs: Any) -> Any:
        if score_last is None:
            return original(*args, **kwargs)
        labels = kwargs.pop("labels")
        kwargs["use_cache"] = False
        hidden = self.base_model(*args, **kwargs).last_hidden_state
        if hidden.shape[1] <= score_last:
            raise ValueError("every row needs at least one prompt token before its completion")
        hidden = hidden[:, -score_last - 1 : -1]  # position t predicts token t + 1
        targets = labels[:, -score_last:]
        head = self.get_output_embeddings()
        weight, bias = head.weight, head.bias
        hidden, targets = hidden.to(weight.device), targets.to(weight.device)
        mask = targets != -100
        if isinstance(weight, DTensor):  # FSDP2 shards the head
            weight = weight.full_tensor()
            bias = None if bias is None else bias.full_tensor()
        with maybe_gather_lm_head_ctx(weight, bias):  # DeepSpeed ZeRO-3
            scored = ChunkedLogProbFunction.apply(  # type: ignore[no-untyped-call]
                hidden[mask],
                weight,
                bias,
                targets[mask],
                temperature,
                VOCAB_TILE,
                softcap,
                logit_scale,
                outputs,
            )
        # masked_scatter keeps an all-masked micro-batch in the graph (a zero gradient, not an error)
        log_probs, ent = (
            None if x is None else x.new_zeros(mask.shape).masked_scatter(mask, x) for x in scored[:2]
        )
        return CompletionScores(log_probs=log_probs, entropy=ent)

    model.forward = types.MethodType(forward, model)
