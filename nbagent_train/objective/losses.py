"""The policy loss, term by term, on (batch, completion-length) tensors.

The formulas and their order follow TRL 1.16's `GRPOTrainer._compute_loss` for the same options, which
`tests/train/test_losses_vs_trl.py` checks by running TRL's code on the same tensors:

- ratio ``r = exp(logp - old_logp)``;
  per-token loss ``-min(r * A, clip(r, 1 - clip_low, 1 + clip_high) * A)``;
- truncated importance sampling against the behaviour (server) logprobs multiplies that loss by
  ``w = clip(exp(old_logp - behaviour_logp), floor, cap)`` (token or sequence level; a ``*_mask`` mode
  zeroes out-of-range weights instead), detached; unknown behaviour logprobs (NaN) give ``w = 1``;
- the KL to the reference is added as ``kl_coef * KL`` with ``k3 = exp(ref - logp) - (ref - logp) - 1``
  (low variance, TRL's and L0's) or ``k1 = logp - ref``, optionally times the ratio;
- aggregation: token-mean, sequence-mean, or Dr. GRPO's constant normalizer. The normalizer is passed in, so
  a batch split into micro-batches (gradient accumulation) gives the same gradient as one big batch.

`nll_loss` is the supervised objective (`nbagent-train sft`): ``-logp`` of every scored token, token mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Literal

import torch

from nbagent_train.config.base import Aggregation

ISMode = Literal["token_truncate", "token_mask", "sequence_truncate", "sequence_mask"]


def importance_weights(
    old_logps: torch.Tensor,
    behaviour_logps: torch.Tensor,
    mask: torch.Tensor,
    mode: ISMode = "token_truncate",
    cap: float | None = 2.0,
    floor: float | None = None,
) -> torch.Tensor:
    """Truncated (or masked) importance weights of the trainer's policy over the behaviour policy.

    Returns (B, T) for token modes and (B, 1) for sequence modes, without gradient. NaN behaviour logprobs
    (not recorded, observation tokens) contribute a log-ratio of 0.
    """
    with torch.no_grad():
        diff = torch.nan_to_num((old_logps - behaviour_logps) * mask, nan=0.0)
        if mode.startswith("sequence"):
            diff = diff.sum(dim=-1, keepdim=True)
        ratio = torch.exp(diff)
        if mode.endswith("truncate"):
            return torch.clamp(ratio, min=floor, max=cap)
        low = -float("inf") if floor is None else floor
        high = float("inf") if cap is None else cap
        return ratio.masked_fill((ratio < low) | (ratio > high), 0.0)


def kl_penalty(
    logps: torch.Tensor, ref_logps: torch.Tensor, estimator: Literal["k1", "k3"] = "k3"
) -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from the sampled tokens' logprobs."""
    if estimator == "k1":
        return logps - ref_logps
    delta = ref_logps - logps
    return torch.exp(delta) - delta - 1


def aggregation_normalizer(
    aggregation: Aggregation, *, scored_tokens: float, sequences: float, constant: int | None = None
) -> float:
    """The denominator of the whole batch for `aggregate` (tokens, sequences, or sequences x constant)."""
    if aggregation == "token_mean":
        return max(scored_tokens, 1.0)
    if aggregation == "sequence_mean":
        return max(sequences, 1.0)
    if constant is None:
        raise ValueError("the constant aggregation needs `constant` (tokens per sequence)")
    return max(sequences, 1.0) * constant


def aggregate(
    per_token: torch.Tensor, mask: torch.Tensor, aggregation: Aggregation, normalizer: float
) -> torch.Tensor:
    """Reduce a (B, T) per-token loss to this micro-batch's share of the batch loss."""
    if aggregation == "sequence_mean":
        per_seq = (per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
        return per_seq.sum() / normalizer
    return (per_token * mask).sum() / normalizer


@dataclass
class LossStats:
    """Sums over scored tokens (or sequences), so micro-batches add up; divide by `tokens` to report."""

    tokens: float = 0.0
    sequences: float = 0.0
    policy_loss: float = 0.0
    kl: float = 0.0
    clip_low: float = 0.0
    clip_high: float = 0.0
    ratio: float = 0.0
    nll: float = 0.0
    is_weight: float = 0.0
    is_weight_min: float = float("inf")
    is_weight_max: float = float("-inf")

    def add(self, other: LossStats) -> None:
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if f.name == "is_weight_min":
                setattr(self, f.name, min(mine, theirs))
            elif f.name == "is_weight_max":
                setattr(self, f.name, max(mine, theirs))
            else:
                setattr(self, f.name, mine + theirs)

    def report_nll(self) -> dict[str, float]:
        """The supervised objective's means: NLL per scored token and its perplexity."""
        nll = self.nll / max(self.tokens, 1.0)
        return {"nll": nll, "perplexity": math.exp(min(nll, 50.0))}

    def report(self) -> dict[str, float]:
        """Means per scored token (clip fractions, KL, ratio, IS weight)."""
        n = max(self.tokens, 1.0)
        out = {
            "policy_loss": self.policy_loss / n,
            "kl": self.kl / n,
            "clip_frac_low": self.clip_low / n,
            "clip_frac_high": self.clip_high / n,
            "clip_frac": (self.clip_low + self.clip_high) / n,
            "ratio_mean": self.ratio / n,
        }
        if self.is_weight_max != float("-inf"):
            out |= {
                "is_weight_mean": self.is_weight / n,
                "is_weight_min": self.is_weight_min,
                "is_weight_max": self.is_weight_max,
            }
        return out


@dataclass
class LossOutput:
    loss: torch.Tensor
    """This micro-batch's share of the batch loss (call backward on it)."""
    stats: LossStats


def policy_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    aggregation: Aggregation = "token_mean",
    normalizer: float,
    ref_logps: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    kl_estimator: Literal["k1", "k3"] = "k3",
    kl_ratio_correction: bool = False,
    is_weights: torch.Tensor | None = None,
) -> LossOutput:
    """The clipped policy-gradient loss with optional KL term and importance weights.

    All tensors are (B, T) over the completion region; `advantages` may also be (B,) or (B, 1);
    `mask` is 1 on scored tokens. `old_logps` are the logprobs before this batch's first update
    (``logps.detach()`` when strictly on-policy).
    """
    mask = mask.to(logps.dtype)
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1)
    ratio = torch.exp(logps - old_logps)
    clipped = torch.clamp(ratio, 1 - clip_low, 1 + clip_high)
    per_token = -torch.min(ratio * advantages, clipped * advantages)
    if is_weights is not None:
        per_token = per_token * is_weights
    kl = None
    if kl_coef != 0.0:
        if ref_logps is None:
            raise ValueError("kl_coef is set but no reference logprobs were given")
        kl = kl_penalty(logps, ref_logps, kl_estimator)
        if kl_ratio_correction:
            kl = kl * ratio
        per_token = per_token + kl_coef * kl
    loss = aggregate(per_token, mask, aggregation, normalizer)

    with torch.no_grad():
        stats = LossStats(
            tokens=float(mask.sum()),
            sequences=float(mask.shape[0]),
            policy_loss=float((per_token * mask).sum()),
            kl=0.0 if kl is None else float((kl * mask).sum()),
            clip_low=float((((ratio < 1 - clip_low) & (advantages < 0)).to(mask.dtype) * mask).sum()),
            clip_high=float((((ratio > 1 + clip_high) & (advantages > 0)).to(mask.dtype) * mask).sum()),
            ratio=float((ratio * mask).sum()),
        )
        if is_weights is not None:
            w = is_weights.expand_as(mask)
            scored = w[mask > 0]
            stats.is_weight = float((w * mask).sum())
            if scored.numel():
                stats.is_weight_min = float(scored.min())
                stats.is_weight_max = float(scored.max())
    return LossOutput(loss=loss, stats=stats)


def nll_loss(logps: torch.Tensor, mask: torch.Tensor, *, normalizer: float) -> LossOutput:
    """Negative log-likelihood of the scored tokens (`mask` 1), summed and divided by `normalizer` (the
    batch's scored tokens: a token mean that micro-batches add up to)."""
    mask = mask.to(logps.dtype)
    total = -(logps * mask).sum()
    with torch.no_grad():
        stats = LossStats(tokens=float(mask.sum()), sequences=float(mask.shape[0]), nll=float(total))
    return LossOutput(loss=total / normalizer, stats=stats)
