"""Forward passes and optimizer steps over token-budget micro-batches, on this process's share of a batch.

A batch is dealt to the ranks, split into `run.mini_batches` optimizer steps (each repeated for
`run.ppo_epochs`), and each step's samples packed into micro-batches of at most the token budget whose
gradients accumulate; ranks run the same number of passes (a zero-weight filler where one has fewer).
The loss is `nbagent_train.objective.losses`'s, normalized over the whole step on every rank.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

from nbagent_train.backends.memory import MemoryPlan
from nbagent_train.config.base import TrainConfig
from nbagent_train.errors import BackendError
from nbagent_train.objective.batching import MicroBatch, collate, plan_micro_batches, stretch_plan
from nbagent_train.objective.losses import (
    LossOutput,
    LossStats,
    aggregation_normalizer,
    importance_weights,
    nll_loss,
    policy_loss,
)
from nbagent_train.objective.samples import Sample


def uses_kl(config: TrainConfig) -> bool:
    """Whether the loss has a KL term (and so needs reference logprobs)."""
    return config.objective == "policy_gradient" and config.loss.kl_coef != 0.0


class _Plan:
    """Micro-batches of one optimizer step on this rank, with their cached old/ref logprobs."""

    def __init__(self, batches: list[MicroBatch], indices: list[list[int]]) -> None:
        self.batches = batches
        self.indices = indices
        """Sample indices (into the list the plan was made from) of each micro-batch's rows."""
        self.old: list[torch.Tensor | None] = [None] * len(batches)
        self.ref: list[torch.Tensor | None] = [None] * len(batches)


class PolicyUpdater:
    """Scores samples with a prepared policy and trains it on batches (what `TRLBackend.setup` builds).

    `ref_model` is the frozen reference of the KL term (None with LoRA: the adapter is disabled instead,
    or without a KL term); `rng` shuffles batches into mini-batches (the backend checkpoints it).
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        accelerator: Any,
        model: Any,
        optimizer: Any,
        scheduler: Any,
        ref_model: Any,
        pad_token_id: int,
        memory: MemoryPlan,
        token_budget: int,
        rng: random.Random,
    ) -> None:
        self.config = config
        self.accelerator = accelerator
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.ref_model = ref_model
        self.pad_token_id = pad_token_id
        self.memory = memory
        self.token_budget = token_budget
        self.rng = rng
        self.device = torch.device(accelerator.device)
        self._pg = config.objective == "policy_gradient"
        self._kl = uses_kl(config)
        self._lora = config.lora.rank > 0

    def preflight(self, samples: Sequence[Sample]) -> None:
        """Raise `MemoryBudgetError` if the longest of `samples` cannot fit alone in a micro-batch."""
        if samples:
            longest = max(s.num_tokens for s in samples)
            self.memory.require_fit(longest, checkpointing=self.config.run.gradient_checkpointing)

    # -- forward passes --------------------------------------------------------------------------------

    def _forward(self, model: Any, mb: MicroBatch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(logprobs, entropies) of the completion region, (B, C) each."""
        with self.accelerator.autocast():
            out = model(
                input_ids=mb.input_ids,
                attention_mask=mb.attention_mask,
                position_ids=mb.position_ids,
                labels=mb.labels,
                score_last=mb.completion_width,
            )
        return out.log_probs, out.entropy

    def _reference_context(self) -> AbstractContextManager[Any]:
        if self._lora:
            context: AbstractContextManager[Any] = self.accelerator.unwrap_model(self.model).disable_adapter()
            return context
        return nullcontext()

    @torch.no_grad()
    def _reference_logps(self, mb: MicroBatch) -> torch.Tensor:
        if self.ref_model is not None:
            return self._forward(self.ref_model, mb)[0]
        with self._reference_context():
            return self._forward(self.accelerator.unwrap_model(self.model), mb)[0]

    def _collate(self, samples: Sequence[Sample], *, with_advantages: bool | None = None) -> MicroBatch:
        """Pad and move to the device; advantages only for the policy-gradient objective by default."""
        advantages = self._pg if with_advantages is None else with_advantages
        return collate(samples, self.pad_token_id, with_advantages=advantages).to(self.device)

    def score(self, samples: Sequence[Sample]) -> list[list[float]]:
        """The current policy's logprob of every completion token of each sample."""
        out: list[list[float]] = [[] for _ in samples]
        model = self.accelerator.unwrap_model(self.model)
        for idx in plan_micro_batches(samples, self.token_budget):
            mb = self._collate([samples[i] for i in idx], with_advantages=False)
            mb.labels[:, -mb.completion_width :] = torch.where(
                mb.attention_mask[:, -mb.completion_width :] > 0,
                mb.input_ids[:, -mb.completion_width :],
                -100,
            )
            with torch.no_grad():
                logps = self._forward(model, mb)[0].float().cpu()
            for row, i in enumerate(idx):
                out[i] = logps[row, : len(samples[i].completion_ids)].tolist()
        return out

    # -- ranks and plans -------------------------------------------------------------------------------

    def _local(self, samples: Sequence[Sample]) -> list[Sample]:
        """This rank's share of a batch (longest first, dealt round-robin so ranks get similar work)."""
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        ordered = sorted(samples, key=lambda s: s.num_tokens, reverse=True)
        return ordered[rank::world]

    def _max_over_ranks(self, value: int) -> int:
        if self.accelerator.num_processes == 1:
            return value
        t = torch.tensor([value], device=self.device)
        return int(self.accelerator.reduce(t, reduction="max").item())

    def _sum_over_ranks(self, *values: float) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        if self.accelerator.num_processes > 1:
            t = self.accelerator.reduce(t, reduction="sum")
        return [float(x) for x in t.tolist()]

    def _plan(self, samples: Sequence[Sample]) -> _Plan:
        self.preflight(samples)
        plan = plan_micro_batches(samples, self.token_budget) if samples else []
        target = self._max_over_ranks(len(plan))
        plan, fillers = stretch_plan(plan, target) if plan else ([], target)
        batches = [self._collate([samples[i] for i in idx]) for idx in plan]
        indices = [list(idx) for idx in plan]
        for _ in range(fillers):
            # Ranks must run the same number of forward/backward passes; a filler pass scores nothing.
            source = [samples[0]] if samples else []
            if not source:
                raise BackendError(
                    "a rank received no samples; give each process at least one sample per batch"
                )
            filler = self._collate(source)
            filler.loss_mask.zero_()
            filler.weight = 0.0
            batches.append(filler)
            indices.append([0])
        return _Plan(batches, indices)

    def _split(self, samples: list[Sample]) -> list[list[Sample]]:
        n = min(self.config.run.mini_batches, len(samples))
        shuffled = list(samples)
        self.rng.shuffle(shuffled)
        return [shuffled[i::n] for i in range(n)]

    # -- training --------------------------------------------------------------------------------------

    def step(self, samples: Sequence[Sample]) -> dict[str, float]:
        """Train on one batch; its metrics (`optimizer_steps` counts the updates made)."""
        if not samples:
            raise BackendError("step() got an empty batch (dynamic sampling may have dropped every group)")
        start = time.perf_counter()
        parts = [self._plan(part) for part in self._split(self._local(samples))]
        cfg = self.config
        reuse = self._pg and (cfg.run.ppo_epochs > 1 or len(parts) > 1)
        for plan in parts:
            self._precompute(plan, old=reuse, ref=self._kl)
        stats = LossStats()
        entropy_sum = 0.0
        loss_total = 0.0
        grad_norms: list[float] = []
        real_tokens = 0
        for _ in range(cfg.run.ppo_epochs):
            for plan in parts:
                loss, part_stats, ent, norm, tokens = self._update(plan)
                loss_total += loss
                stats.add(part_stats)
                entropy_sum += ent
                real_tokens += tokens
                if norm is not None:
                    grad_norms.append(norm)
        elapsed = time.perf_counter() - start
        totals = self._sum_over_ranks(stats.tokens, real_tokens, entropy_sum)
        metrics = stats.report() if self._pg else stats.report_nll()
        metrics |= {
            "loss": loss_total / max(1, len(parts) * cfg.run.ppo_epochs),
            "optimizer_steps": float(len(parts) * cfg.run.ppo_epochs),
            "micro_batches": float(sum(len(plan.batches) for plan in parts)),
            "samples": float(len(samples)),
            "scored_tokens": totals[0] / cfg.run.ppo_epochs,
            "tokens": totals[1] / cfg.run.ppo_epochs,
            "tokens_per_s": totals[1] / elapsed if elapsed > 0 else 0.0,
            "step_time_s": elapsed,
            "lr": float(self.scheduler.get_last_lr()[0]),
        }
        if cfg.run.log_entropy:
            metrics["entropy"] = totals[2] / max(totals[0], 1.0)
        if grad_norms:
            metrics["grad_norm"] = sum(grad_norms) / len(grad_norms)
        return metrics

    @torch.no_grad()
    def _precompute(self, plan: _Plan, *, old: bool, ref: bool) -> None:
        model = self.accelerator.unwrap_model(self.model)
        for i, mb in enumerate(plan.batches):
            if old:
                plan.old[i] = self._forward(model, mb)[0].detach()
            if ref:
                plan.ref[i] = self._reference_logps(mb)

    def _normalizer(self, plan: _Plan) -> float:
        local_tokens = sum(float(mb.loss_mask.sum()) for mb in plan.batches)
        local_sequences = sum(mb.rows for mb in plan.batches if mb.weight > 0)
        tokens, sequences = self._sum_over_ranks(local_tokens, local_sequences)
        return aggregation_normalizer(
            self.config.aggregation,
            scored_tokens=tokens,
            sequences=sequences,
            constant=self.config.constant_normalizer if self.config.aggregation == "constant" else None,
        )

    def _micro_loss(
        self, mb: MicroBatch, normalizer: float, old: torch.Tensor | None, ref: torch.Tensor | None
    ) -> tuple[torch.Tensor, LossStats, float]:
        logps, entropy = self._forward(self.model, mb)
        logps = logps.float()
        if self._pg:
            out = self._pg_loss(mb, logps, normalizer, old, ref)
        else:
            out = nll_loss(logps, mb.loss_mask, normalizer=normalizer)
        ent = 0.0 if entropy is None else float((entropy.detach().float() * mb.loss_mask).sum())
        return out.loss * mb.weight, out.stats, ent

    def _pg_loss(
        self,
        mb: MicroBatch,
        logps: torch.Tensor,
        normalizer: float,
        old: torch.Tensor | None,
        ref: torch.Tensor | None,
    ) -> LossOutput:
        cfg = self.config.loss
        old_logps = logps.detach() if old is None else old.float()
        weights = None
        if cfg.is_correction and not torch.isnan(mb.behaviour_logps).all():
            weights = importance_weights(
                old_logps, mb.behaviour_logps, mb.loss_mask, cfg.is_mode, cfg.is_cap, cfg.is_floor
            )
        return policy_loss(
            logps,
            old_logps,
            mb.advantages,
            mb.loss_mask,
            clip_low=cfg.clip_low,
            clip_high=cfg.clip_high,
            aggregation=self.config.aggregation,
            normalizer=normalizer,
            ref_logps=None if ref is None else ref.float(),
            kl_coef=cfg.kl_coef,
            kl_estimator=cfg.kl_estimator,
            kl_ratio_correction=cfg.kl_ratio_correction,
            is_weights=weights,
        )

    def compute_loss(
        self, samples: Sequence[Sample], old_logps: Sequence[Sequence[float]] | None = None
    ) -> tuple[torch.Tensor, LossStats]:
        """The batch loss with its graph (no update); see `TRLBackend.compute_loss`."""
        plan = self._plan(list(samples))
        self._precompute(plan, old=False, ref=self._kl)
        if old_logps is not None:
            for i, (mb, idx) in enumerate(zip(plan.batches, plan.indices, strict=True)):
                given = torch.zeros(mb.rows, mb.completion_width)
                for row, k in enumerate(idx):
                    given[row, : len(old_logps[k])] = torch.tensor(old_logps[k], dtype=torch.float32)
                plan.old[i] = given.to(self.device)
        normalizer = self._normalizer(plan)
        total: torch.Tensor | None = None
        stats = LossStats()
        for mb, old, ref in zip(plan.batches, plan.old, plan.ref, strict=True):
            loss, mb_stats, _ = self._micro_loss(mb, normalizer, old, ref)
            total = loss if total is None else total + loss
            stats.add(mb_stats)
        assert total is not None
        return total, stats

    def _update(self, plan: _Plan) -> tuple[float, LossStats, float, float | None, int]:
        acc = self.accelerator
        normalizer = self._normalizer(plan)
        scale = float(acc.num_processes)  # gradients are averaged over ranks; the normalizer is global
        stats = LossStats()
        entropy = 0.0
        loss_value = 0.0
        real_tokens = 0
        n = len(plan.batches)
        for i, mb in enumerate(plan.batches):
            last = i == n - 1
            acc.sync_gradients = last
            context = nullcontext() if last else acc.no_sync(self.model)
            with context:
                loss, mb_stats, ent = self._micro_loss(mb, normalizer, plan.old[i], plan.ref[i])
                acc.backward(loss * scale)
            loss_value += float(loss.detach())
            stats.add(mb_stats)
            entropy += ent
            if mb.weight > 0:
                real_tokens += int(mb.attention_mask.sum())
        grad_norm = None
        max_norm = self.config.optim.max_grad_norm
        if max_norm is not None:
            norm = acc.clip_grad_norm_(self.model.parameters(), max_norm)
            grad_norm = float(norm) if norm is not None else None
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        loss_total = self._sum_over_ranks(loss_value)[0]
        return loss_total, stats, entropy, grad_norm, real_tokens
