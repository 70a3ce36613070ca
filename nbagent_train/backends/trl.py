"""The default backend: TRL's log-prob machinery and loss conventions under our own optimizer step.

What comes from where:

- **TRL**: `ChunkedLogProbFunction`, the kernel behind `GRPOTrainer`'s fused LM head, computes per-token
  log-probabilities and entropies (tiled, without materializing the logits, temperature-scaled), on the
  scored completion tokens only (`backends/head.py`);
  `disable_dropout_in_model`; `prepare_deepspeed` / `prepare_fsdp` for a full-fine-tuning reference
  model (`backends/loading.py`). The loss options and their formulas match `GRPOTrainer._compute_loss`
  (tested against it).
- **PEFT** for LoRA (the reference policy is the base model with the adapter disabled).
- **accelerate** for devices, mixed precision, DDP / FSDP / DeepSpeed, gradient sync and checkpoints
  (`backends/checkpoints.py`).
- **ours**: token-budget micro-batches of token-exact samples (prompts of any length, masked observation
  tokens, per-token advantages) and one `step(batch)` call per RL batch, which an online loop drives
  (`backends/updates.py`).

With `objective: sft` the same machinery trains the token-mean NLL of the completion tokens instead (no
advantages, old or reference logprobs).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from nbagent_train.backends.base import ExportResult
from nbagent_train.backends.checkpoints import (
    export_weights,
    keep_trainable_weights,
    load_checkpoint,
    save_checkpoint,
)
from nbagent_train.backends.loading import (
    build_optimizer,
    fill_deepspeed_config,
    load_policy,
    pad_token_id,
    reference_model,
    resolve_dtype,
)
from nbagent_train.backends.memory import estimate, free_memory, return_freed_memory
from nbagent_train.backends.updates import PolicyUpdater, uses_kl
from nbagent_train.config.base import TrainConfig
from nbagent_train.errors import BackendError
from nbagent_train.objective.losses import LossStats
from nbagent_train.objective.samples import Sample


class TRLBackend:
    """`TrainerBackend` on TRL + PEFT + accelerate. Call `setup()` before anything else."""

    name = "trl"

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.tokenizer: Any = None
        self._step = 0
        self._rng = random.Random(config.run.seed)
        self._updater: PolicyUpdater | None = None
        """Set by `setup`, dropped by `close`."""

    @property
    def global_step(self) -> int:
        return self._step

    @property
    def is_main_process(self) -> bool:
        return bool(self.accelerator.is_main_process) if self._updater is not None else True

    @property
    def is_lora(self) -> bool:
        return self.config.lora.rank > 0

    def setup(self, total_steps: int | None = None) -> None:
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        cfg = self.config
        if not cfg.model:
            raise BackendError("model: no policy given; pass --model PATH (a Hugging Face model folder)")
        self.dtype = resolve_dtype(cfg.run.dtype)
        mixed = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.dtype, "no")
        self.accelerator = acc = Accelerator(mixed_precision=mixed)
        set_seed(cfg.run.seed)
        self.tokenizer, model = load_policy(cfg, self.dtype)
        optimizer, scheduler = build_optimizer(model, cfg, total_steps)
        fill_deepspeed_config(acc, cfg)
        self.model, optimizer, scheduler = acc.prepare(model, optimizer, scheduler)
        needs_ref = uses_kl(cfg) and not self.is_lora
        self.ref_model = reference_model(cfg, acc, self.dtype) if needs_ref else None
        if self.is_lora:
            acc.register_save_state_pre_hook(keep_trainable_weights)
        device = torch.device(acc.device)
        if device.type == "cpu":
            return_freed_memory()
        self.memory = estimate(
            acc.unwrap_model(self.model),
            dtype=self.dtype,
            checkpointing=cfg.run.gradient_checkpointing,
            free=free_memory(device),
        )
        wanted = cfg.run.micro_batch_tokens or (8192 if device.type == "cuda" else 2048)
        self.token_budget = self.memory.budget_for(wanted, checkpointing=cfg.run.gradient_checkpointing)
        self._updater = PolicyUpdater(
            cfg,
            accelerator=acc,
            model=self.model,
            optimizer=optimizer,
            scheduler=scheduler,
            ref_model=self.ref_model,
            pad_token_id=pad_token_id(self.tokenizer),
            memory=self.memory,
            token_budget=self.token_budget,
            rng=self._rng,
        )

    def _ready(self) -> PolicyUpdater:
        if self._updater is None:
            raise BackendError("the backend is not set up; call setup() first")
        return self._updater

    def preflight(self, samples: Sequence[Sample]) -> None:
        self._ready().preflight(samples)

    def step(self, samples: Sequence[Sample]) -> dict[str, float]:
        metrics = self._ready().step(samples)
        self._step += int(metrics["optimizer_steps"])
        return metrics

    def score(self, samples: Sequence[Sample]) -> list[list[float]]:
        return self._ready().score(samples)

    def compute_loss(
        self, samples: Sequence[Sample], old_logps: Sequence[Sequence[float]] | None = None
    ) -> tuple[torch.Tensor, LossStats]:
        """The batch loss with its graph (no update), on one process: for tests and diagnostics.

        `old_logps` (per sample, aligned with its completion ids) stand for the policy before this batch's
        first update; by default the current policy's (strictly on-policy).
        """
        return self._ready().compute_loss(samples, old_logps)

    def save(self, path: Path, extra: dict[str, Any] | None = None) -> None:
        self._ready()
        state = {
            "global_step": self._step,
            "model": self.config.model,
            "lora": self.is_lora,
            "extra": extra or {},
        }
        save_checkpoint(self.accelerator, Path(path), state, self._rng)

    def load(self, path: Path) -> dict[str, Any]:
        self._ready()
        state = load_checkpoint(self.accelerator, Path(path), lora_rank=self.config.lora.rank, rng=self._rng)
        self._step = int(state["global_step"])
        extra: dict[str, Any] = state.get("extra", {})
        return extra

    def export(self, path: Path, *, merged: bool = False) -> ExportResult:
        self._ready()
        return export_weights(
            self.accelerator,
            self.model,
            self.tokenizer,
            Path(path),
            base_model=self.config.model,
            lora=self.is_lora,
            merged=merged,
            dtype=self.dtype,
        )

    def barrier(self) -> None:
        if self._updater is not None and self.accelerator.num_processes > 1:
            self.accelerator.wait_for_everyone()

    def close(self) -> None:
        if self._updater is not None:
            self.accelerator.end_training()
            self.accelerator.free_memory()
            self._updater = None
