"""From samples to padded tensors, in micro-batches bounded by a token budget.

The layout is TRL's: prompts left-padded, completion regions right-padded, so the scored region is the
last `C` positions of every row (`logits_to_keep = C`). Samples are sorted by length before they are cut
into micro-batches, which keeps padding low; a micro-batch holds at most `token_budget` padded tokens
(a single longer sample gets a micro-batch of its own).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from nbagent_train.objective.samples import Sample


@dataclass
class MicroBatch:
    """Padded tensors of a few samples. Completion-region tensors are (B, C)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    labels: torch.Tensor
    """`input_ids` with -100 wherever no logprob is needed (prompt, padding, masked observations)."""
    loss_mask: torch.Tensor
    advantages: torch.Tensor
    behaviour_logps: torch.Tensor
    """NaN where the behaviour logprob is unknown."""
    completion_width: int
    weight: float = 1.0
    """0 for a filler micro-batch that only keeps distributed ranks in step."""

    @property
    def rows(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def padded_tokens(self) -> int:
        return int(self.input_ids.numel())

    def to(self, device: torch.device | str) -> MicroBatch:
        return MicroBatch(
            input_ids=self.input_ids.to(device),
            attention_mask=self.attention_mask.to(device),
            position_ids=self.position_ids.to(device),
            labels=self.labels.to(device),
            loss_mask=self.loss_mask.to(device),
            advantages=self.advantages.to(device),
            behaviour_logps=self.behaviour_logps.to(device),
            completion_width=self.completion_width,
            weight=self.weight,
        )


def collate(samples: Sequence[Sample], pad_token_id: int, *, with_advantages: bool = True) -> MicroBatch:
    """Pad `samples` into one micro-batch (prompts on the left, completions on the right)."""
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    p_width = max(len(s.prompt_ids) for s in samples)
    c_width = max(len(s.completion_ids) for s in samples)
    rows = len(samples)
    input_ids = torch.full((rows, p_width + c_width), pad_token_id, dtype=torch.long)
    attention = torch.zeros((rows, p_width + c_width), dtype=torch.long)
    loss_mask = torch.zeros((rows, c_width), dtype=torch.float32)
    advantages = torch.zeros((rows, c_width), dtype=torch.float32)
    behaviour = torch.full((rows, c_width), math.nan, dtype=torch.float32)
    for i, s in enumerate(samples):
        p, c = len(s.prompt_ids), len(s.completion_ids)
        input_ids[i, p_width - p : p_width] = torch.tensor(s.prompt_ids, dtype=torch.long)
        input_ids[i, p_width : p_width + c] = torch.tensor(s.completion_ids, dtype=torch.long)
        attention[i, p_width - p : p_width + c] = 1
        loss_mask[i, :c] = torch.tensor(s.loss_mask, dtype=torch.float32)
        if with_advantages:
            advantages[i, :c] = torch.tensor(s.token_advantages(), dtype=torch.float32)
        if s.behaviour_logprobs is not None:
            behaviour[i, :c] = torch.tensor(s.behaviour_logprobs, dtype=torch.float32)
    position_ids = (attention.cumsum(dim=1) - 1).clamp(min=0)
    labels = input_ids.masked_fill(attention == 0, -100)
    labels[:, :p_width] = -100
    labels[:, p_width:] = labels[:, p_width:].masked_fill(loss_mask == 0, -100)
    return MicroBatch(
        input_ids=input_ids,
        attention_mask=attention,
        position_ids=position_ids,
        labels=labels,
        loss_mask=loss_mask,
        advantages=advantages,
        behaviour_logps=behaviour,
        completion_width=c_width,
    )


def _padded_cost(samples: Sequence[Sample]) -> int:
    return len(samples) * (
        max(len(s.prompt_ids) for s in samples) + max(len(s.completion_ids) for s in samples)
    )


def plan_micro_batches(samples: Sequence[Sample], token_budget: int) -> list[list[int]]:
    """Group sample indices into micro-batches of at most `token_budget` padded tokens (longest first)."""
    order = sorted(range(len(samples)), key=lambda i: (samples[i].num_tokens, i), reverse=True)
    plan: list[list[int]] = []
    current: list[int] = []
    for idx in order:
        trial = [*current, idx]
        if current and _padded_cost([samples[i] for i in trial]) > token_budget:
            plan.append(current)
            current = [idx]
        else:
            current = trial
    if current:
        plan.append(current)
    return plan


def stretch_plan(plan: list[list[int]], count: int) -> tuple[list[list[int]], int]:
    """Split micro-batches until there are `count` of them (ranks must run the same number of passes).

    Returns the new plan and how many filler passes are still needed when every micro-batch is a single
    sample (the caller runs those with weight 0).
    """
    plan = [list(mb) for mb in plan]
    while len(plan) < count:
        largest = max(range(len(plan)), key=lambda i: len(plan[i]))
        if len(plan[largest]) < 2:
            break
        mb = plan.pop(largest)
        half = len(mb) // 2
        plan[largest:largest] = [mb[:half], mb[half:]]
    return plan, count - len(plan)
