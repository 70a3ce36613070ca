"""How many tokens a micro-batch may hold in the memory this process has, estimated before training.

Activation memory grows linearly with the tokens of a micro-batch (SDPA attention, completion-only LM
head); the estimate per token comes from the model's shape and was calibrated on SmolLM2-135M on a CPU
(benchmarks/train.py measures it). `MemoryPlan.budget_for` lowers the backend's token budget to what
fits, and `require_fit` refuses, with the numbers, a sample that would not fit on its own.
"""

from __future__ import annotations

import ctypes
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nbagent_train.backends.head import VOCAB_TILE
from nbagent_train.errors import BackendError

logger = logging.getLogger("nbagent_train")

GIB = 1024**3
HEADROOM = 0.8
"""Share of the free memory a micro-batch plan may use (allocator fragmentation, temporaries)."""
_LAYER_ACTIVATIONS = (20, 8)
"""Values kept per token by one decoder layer for backward: 20 x hidden + 8 x intermediate (measured)."""
_HEAD_TEMPORARIES = 6
"""fp32 copies of a logits tile alive at once while the LM head folds it (forward or backward)."""
_M_MMAP_THRESHOLD = -3
_TOKEN_ROWS = 4096
"""Scored tokens per LM-head tile (TRL's `TOKEN_CHUNK_SIZE`)."""


class MemoryBudgetError(BackendError):
    """A sample would not fit in the memory this process has, even alone in its micro-batch."""


def free_memory(device: torch.device) -> int:
    """Bytes this process can still allocate on `device` (CPU: the host's and its cgroup's share)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    free = _meminfo_available()
    cgroup = Path("/sys/fs/cgroup")
    try:
        limit = (cgroup / "memory.max").read_text().strip()
        if limit != "max":
            free = min(free, int(limit) - int((cgroup / "memory.current").read_text()))
    except (OSError, ValueError):
        pass
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # processes of one host share its memory
    return max(0, free // max(1, local))


def return_freed_memory() -> None:
    """Make glibc give large freed blocks back to the system (a fixed mmap threshold of 1 MiB).

    By default glibc raises its mmap threshold each time a large block is freed, so later activations come
    from the heap, which it rarely trims: on a CPU the peak RSS of a training step was about twice the
    memory in use (SmolLM2-135M, 600 tokens: 1.1 GB over the model, 0.6 GB with this).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to tune
        return
    libc.mallopt(_M_MMAP_THRESHOLD, 1 << 20)


def _meminfo_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise OSError("no MemAvailable in /proc/meminfo")


@dataclass(frozen=True)
class MemoryPlan:
    """Free memory against what training needs: fixed costs plus a cost per token of a micro-batch."""

    free: int
    fixed: int
    """Gradients and AdamW states of the trainable weights (allocated at the first step)."""
    per_token: int
    """Activations kept for backward, per token of a micro-batch."""
    per_head_row: int
    """LM-head tile temporaries per scored token, up to the 4,096 rows of one tile."""

    def needed(self, tokens: int) -> int:
        return self.fixed + tokens * self.per_token + min(tokens, _TOKEN_ROWS) * self.per_head_row

    @property
    def token_budget(self) -> int:
        """The most tokens a micro-batch may hold (0: not even one)."""
        room = int(self.free * HEADROOM) - self.fixed
        within_tile = room // (self.per_token + self.per_head_row)
        if within_tile <= _TOKEN_ROWS:
            return max(0, within_tile)
        return (room - _TOKEN_ROWS * self.per_head_row) // self.per_token

    def fits(self, tokens: int) -> bool:
        return self.needed(tokens) <= self.free * HEADROOM

    def budget_for(self, wanted: int, *, checkpointing: bool) -> int:
        """`wanted` tokens per micro-batch, lowered (with a warning) to what the free memory holds."""
        fitting = self.token_budget
        if fitting >= wanted:
            return wanted
        logger.warning(
            "run.micro_batch_tokens: %s tokens per micro-batch need about %s but %s is free; using at most "
            "%s (pass --micro-batch-tokens %s to choose%s)",
            f"{wanted:,}",
            fmt_gib(self.needed(wanted)),
            fmt_gib(self.free),
            f"{fitting:,}",
            fitting,
            "" if checkpointing else ", or --gradient-checkpointing to fit more",
        )
        return max(1, fitting)

    def require_fit(self, tokens: int, *, checkpointing: bool) -> None:
        """Raise `MemoryBudgetError`, naming what to change, if a sample of `tokens` cannot fit alone."""
        if self.fits(tokens):
            return
        hints = [] if checkpointing else ["pass --gradient-checkpointing"]
        hints += ["lower --max-prompt-tokens or --max-completion-tokens", "free memory"]
        raise MemoryBudgetError(
            f"a sample of {tokens:,} tokens needs about {fmt_gib(self.needed(tokens))} to train "
            f"but {fmt_gib(self.free)} is free; {', '.join(hints[:-1])}, or {hints[-1]}"
        )


def estimate(model: Any, *, dtype: torch.dtype, checkpointing: bool, free: int) -> MemoryPlan:
    """The memory plan of training `model` (its trainable weights set) with activations in `dtype`."""
    text = model.config.get_text_config()
    hidden, layers = int(text.hidden_size), int(text.num_hidden_layers)
    inter = int(getattr(text, "intermediate_size", None) or 4 * hidden)
    width = torch.finfo(dtype).bits // 8
    layer = (_LAYER_ACTIVATIONS[0] * hidden + _LAYER_ACTIVATIONS[1] * inter) * width
    # checkpointing keeps each layer's input and recomputes one layer at a time in backward
    activations = layers * hidden * width + layer if checkpointing else layers * layer
    head_row = _HEAD_TEMPORARIES * VOCAB_TILE * 4
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return MemoryPlan(free=free, fixed=3 * trainable, per_token=activations, per_head_row=head_row)


def fmt_gib(n: int) -> str:
    return f"{n / GIB:.1f} GB"
