"""The seam between the RL recipe (samples, advantages, losses) and the engine that updates weights."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from nbagent_train.config.base import TrainConfig
from nbagent_train.objective.samples import Sample

TRAINER_STATE_FILE = "trainer_state.json"
"""Written last into every checkpoint folder: its presence marks the checkpoint complete."""


@dataclass(frozen=True)
class ExportResult:
    """What `TrainerBackend.export` wrote."""

    path: Path
    kind: Literal["lora", "full"]
    """`lora`: a PEFT adapter folder (vLLM `/v1/load_lora_adapter`); `full`: an HF model folder."""
    base_model: str
    """The model the adapter applies to (for `full`, the model it was trained from)."""


@runtime_checkable
class TrainerBackend(Protocol):
    """An engine that turns batches of samples (advantages set) into weight updates.

    A backend owns the model, optimizer, schedule, precision and distribution; it does not build samples,
    compute advantages or define the loss formula: it calls `nbagent_train.objective.batching` and
    `nbagent_train.objective.losses` for those, so every backend trains the same objective.
    """

    config: TrainConfig

    @property
    def global_step(self) -> int:
        """Optimizer steps taken so far (restored by `load`)."""
        ...

    @property
    def is_main_process(self) -> bool:
        """True on the process that writes logs and exports (rank 0)."""
        ...

    @property
    def is_lora(self) -> bool: ...

    @property
    def tokenizer(self) -> Any | None:
        """The policy's tokenizer once set up (None before): it re-tokenizes steps recorded without ids."""
        ...

    def setup(self, total_steps: int | None = None) -> None:
        """Load the model and tokenizer, wrap LoRA if configured, build the optimizer and schedule.

        `total_steps` sizes decaying learning-rate schedules.
        """
        ...

    def preflight(self, samples: Sequence[Sample]) -> None:
        """Raise (before any training) if one of `samples` could not be trained on in the free memory."""
        ...

    def step(self, samples: Sequence[Sample]) -> dict[str, float]:
        """Train on one RL batch (`run.ppo_epochs` x `run.mini_batches` optimizer steps); return metrics."""
        ...

    def score(self, samples: Sequence[Sample]) -> list[list[float]]:
        """The current policy's logprob of every completion token of each sample (no update)."""
        ...

    def save(self, path: Path, extra: dict[str, Any] | None = None) -> None:
        """Write a resumable checkpoint (weights, optimizer, schedule, RNG, step, `extra`) atomically."""
        ...

    def load(self, path: Path) -> dict[str, Any]:
        """Restore a checkpoint written by `save`; return its `extra`."""
        ...

    def export(self, path: Path, *, merged: bool = False) -> ExportResult:
        """Write servable weights: a LoRA adapter folder (or, with `merged`, the merged full model) or, for
        full fine-tuning, an HF checkpoint; the tokenizer is saved beside them."""
        ...

    def barrier(self) -> None:
        """Wait until every training process gets here (a no-op on one process, or before `setup`)."""
        ...

    def close(self) -> None:
        """Release the model and any process group."""
        ...
