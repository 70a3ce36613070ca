"""The default backend: TRL's log-prob machinery and loss conventions under our own optimizer step.

What comes from where:

- **TRL**: `ChunkedLogProbFunction`, the kernel behind `GRPOTrainer`'s fused LM head, computes per-token
  log-probabilities and entropies (tiled, without materializing the logits, temperature-scaled), on the
  scored completion tokens only (`backends/head.py`);
  `disable_dropout_in_model`; `prepare_deepspeed` / `prepare_fsdp` for a full-fine-tuning reference
  model. The loss options and their formulas match `GRPOTrainer._compute_loss` (tested against it).
- **PEFT** for LoRA (the reference policy is the base model with the adapter disabled).
- **accelerate** for devices, mixed precision, DDP / FSDP / DeepSpeed, gradient sync and checkpoints.
- **ours**: token-budget micro-batches of token-exact samples (prompts of any length, masked observation
  tokens, per-token advantages) and one `step(batch)` call per RL batch, which an online loop drives.

With `objective: sft` the same machinery trains the token-mean NLL of the completion tokens instead (no
advantages, old or reference logprobs).
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import tempfile
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, Literal

import torch

from nbagent_train.backends.base import STATE_FILE, ExportResult
from nbagent_train.backends.head import add_completion_head
from nbagent_train.backends.memory import (
    MemoryBudgetError,
    estimate,
    fmt_gib,
    free_memory,
    return_freed_memory,
)
from nbagent_train.config.base import TrainConfig
from nbagent_train.errors import BackendError, CheckpointError
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

logger = logging.getLogger("nbagent_train")

_RNG_FILE = "python_rng.json"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str) -> torch.dtype:
    """`auto` is bfloat16 on a GPU that supports it, float32 elsewhere."""
    if name == "auto":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return _DTYPES[name]


class _Plan:
    """Micro-batches of one optimizer step on this rank, with their cached old/ref logprobs."""

    def __init__(self, batches: list[MicroBatch], indices: list[list[int]]) -> None:
        self.batches = batches
        self.indices = indices
        """Sample indices (into the list the plan was made from) of each micro-batch's rows."""
        self.old: list[torch.Tensor | None] = [None] * len(batches)
        self.ref: list[torch.Tensor | None] = [None] * len(batches)


def _linear_module_names(model: Any) -> list[str]:
    """The leaf names of the linear layers PEFT's `all-linear` targets (every one but the output head)."""
    head = model.get_output_embeddings()
    return sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and module is not head
        }
    )


class TRLBackend:
    """`TrainerBackend` on TRL + PEFT + accelerate. Call `setup()` before anything else."""

    name = "trl"

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self._step = 0
        self._ready = False
        self._rng = random.Random(config.run.seed)
        self._pg = config.objective == "policy_gradient"
        self._kl = self._pg and config.loss.kl_coef != 0.0
        """Whether the loss has a KL term (and so needs reference logprobs)."""

    # -- properties ------------------------------------------------------------------------------------

    @property
    def global_step(self) -> int:
        return self._step

    @property
    def is_main_process(self) -> bool:
        return bool(self.accelerator.is_main_process) if self._ready else True

    @property
    def is_lora(self) -> bool:
        return self.config.lora.rank > 0

    @property
    def device(self) -> torch.device:
        return torch.device(self.accelerator.device)

    # -- set-up ----------------------------------------------------------------------------------------

    def setup(self, total_steps: int | None = None) -> None:
        from accelerate import Accelerator
        from accelerate.utils import set_seed
        from transformers import AutoModelForCausalLM, AutoTokenizer, get_scheduler
        from trl.trainer.utils import disable_dropout_in_model

        cfg = self.config
        if not cfg.model:
            raise BackendError("model: no policy given; pass --model PATH (a Hugging Face model folder)")
        dtype = resolve_dtype(cfg.run.dtype)
        mixed = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "no")
        self.accelerator = Accelerator(mixed_precision=mixed)
        set_seed(cfg.run.seed)
        self.dtype = dtype
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(cfg.tokenizer or cfg.model)
            model = AutoModelForCausalLM.from_pretrained(cfg.model, dtype=dtype)
        except (OSError, ValueError) as exc:
            raise BackendError(f"model: cannot load {cfg.model!r}: {exc}") from exc
        self.pad_token_id = self._pad_id()
        model.config.use_cache = False
        disable_dropout_in_model(model)
        add_completion_head(model, temperature=cfg.loss.temperature, entropy=cfg.run.log_entropy)
        if cfg.run.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if self.is_lora:
            model = self._wrap_lora(model)
        model.train()

        params = [p for p in model.parameters() if p.requires_grad]
        o = cfg.optim
        optimizer = torch.optim.AdamW(
            params,
            lr=o.learning_rate,
            betas=(o.adam_beta1, o.adam_beta2),
            eps=o.adam_epsilon,
            weight_decay=o.weight_decay,
        )
        steps = total_steps or cfg.run.max_steps
        if o.lr_scheduler != "constant" and steps is None:
            raise BackendError(
                f"optim.lr_scheduler: {o.lr_scheduler!r} decays over a known number of steps; "
                "set run.max_steps"
            )
        name = "constant_with_warmup" if o.lr_scheduler == "constant" else o.lr_scheduler
        scheduler = get_scheduler(
            name, optimizer, num_warmup_steps=o.warmup_steps, num_training_steps=steps or 1
        )
        self._fill_deepspeed_config()
        self.model, self.optimizer, self.scheduler = self.accelerator.prepare(model, optimizer, scheduler)
        self.ref_model = self._reference_model(AutoModelForCausalLM, disable_dropout_in_model)
        self.accelerator.register_save_state_pre_hook(self._keep_trainable_weights)
        if self.device.type == "cpu":
            return_freed_memory()
        self.memory = estimate(
            self.accelerator.unwrap_model(self.model),
            dtype=dtype,
            checkpointing=cfg.run.gradient_checkpointing,
            free=free_memory(self.device),
        )
        self.token_budget = self._token_budget()
        self._ready = True

    def _token_budget(self) -> int:
        """`run.micro_batch_tokens`, lowered (with a warning) to what the free memory holds."""
        wanted = self.config.run.micro_batch_tokens or (8192 if self.device.type == "cuda" else 2048)
        fitting = self.memory.token_budget
        if fitting >= wanted:
            return wanted
        logger.warning(
            "run.micro_batch_tokens: %s tokens per micro-batch need about %s but %s is free; using at most "
            "%s (pass --micro-batch-tokens %s to choose%s)",
            f"{wanted:,}",
            fmt_gib(self.memory.needed(wanted)),
            fmt_gib(self.memory.free),
            f"{fitting:,}",
            fitting,
            "" if self.config.run.gradient_checkpointing else ", or --gradient-checkpointing to fit more",
        )
        return max(1, fitting)

    def preflight(self, samples: Sequence[Sample]) -> None:
        self._require_ready()
        if not samples:
            return
        longest = max(s.num_tokens for s in samples)
        if self.memory.fits(longest):
            return
        hints = [] if self.config.run.gradient_checkpointing else ["pass --gradient-checkpointing"]
        hints += ["lower --max-prompt-tokens or --max-completion-tokens", "free memory"]
        raise MemoryBudgetError(
            f"a sample of {longest:,} tokens needs about {fmt_gib(self.memory.needed(longest))} to train "
            f"but {fmt_gib(self.memory.free)} is free; {', '.join(hints[:-1])}, or {hints[-1]}"
        )

    def _fill_deepspeed_config(self) -> None:
        """DeepSpeed wants a micro-batch size and clips gradients itself: fill its `auto` values."""
        plugin = self.accelerator.state.deepspeed_plugin
        if plugin is None:
            return
        if plugin.is_auto("train_micro_batch_size_per_gpu"):
            plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = 1  # batches are ours; only logged
        if plugin.is_auto("gradient_clipping") and self.config.optim.max_grad_norm is not None:
            plugin.deepspeed_config["gradient_clipping"] = self.config.optim.max_grad_norm

    def _pad_id(self) -> int:
        tok = self.tokenizer
        for candidate in (tok.pad_token_id, tok.eos_token_id, 0):
            if candidate is not None:
                return int(candidate)
        return 0

    def _wrap_lora(self, model: Any) -> Any:
        from peft import LoraConfig, get_peft_model

        lora = self.config.lora
        if lora.init_adapter is not None:
            model = self._load_init_adapter(model, lora.init_adapter)
        else:
            peft_config = LoraConfig(
                r=lora.rank,
                lora_alpha=lora.alpha or 2 * lora.rank,
                lora_dropout=lora.dropout,
                target_modules=lora.target_modules,
                task_type="CAUSAL_LM",
            )
            model = get_peft_model(model, peft_config)
        if self.config.run.gradient_checkpointing:
            model.enable_input_require_grads()
        return model

    def _load_init_adapter(self, model: Any, folder: Path) -> Any:
        """`model` with the PEFT adapter in `folder`, trainable; an error when it does not fit the config."""
        from peft import PeftConfig, PeftModel

        where = f"lora.init_adapter: {folder}"
        if not (folder / "adapter_config.json").is_file():
            raise BackendError(f"{where} is not a PEFT adapter folder (no adapter_config.json)")
        try:
            adapter = PeftConfig.from_pretrained(str(folder))
        except (OSError, ValueError, TypeError) as exc:
            raise BackendError(f"{where}: unreadable adapter_config.json: {exc}") from exc
        lora = self.config.lora
        rank = getattr(adapter, "r", None)
        if rank != lora.rank:
            raise BackendError(f"{where} has rank {rank} but lora.rank is {lora.rank}; set lora.rank={rank}")
        # PEFT writes `all-linear` out as full module paths: compare the layers' leaf names
        theirs = {name.rsplit(".", 1)[-1] for name in getattr(adapter, "target_modules", None) or []}
        wanted = lora.target_modules
        ours = set(_linear_module_names(model) if wanted == "all-linear" else wanted)
        if theirs != ours:
            raise BackendError(
                f"{where} adapts {', '.join(sorted(theirs))} but lora.target_modules gives "
                f"{', '.join(sorted(ours))}; set lora.target_modules to the adapter's"
            )
        base = adapter.base_model_name_or_path
        if base and Path(base).name != Path(self.config.model).name:
            raise BackendError(
                f"{where} was trained on {base!r}, not on the policy {self.config.model!r}; "
                "use that model or another adapter"
            )
        try:
            return PeftModel.from_pretrained(model, str(folder), is_trainable=True)
        except (OSError, ValueError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BackendError(f"{where} does not load onto {self.config.model!r}: {first}") from exc

    def _reference_model(self, auto_cls: Any, no_dropout: Any) -> Any:
        """A frozen copy of the initial policy for the KL term (None with LoRA: the adapter is disabled)."""
        if not self._kl or self.is_lora:
            return None
        from accelerate.utils import DistributedType
        from trl.models.utils import prepare_deepspeed, prepare_fsdp

        ref = auto_cls.from_pretrained(self.config.model, dtype=self.dtype)
        ref.config.use_cache = False
        no_dropout(ref)
        add_completion_head(ref, temperature=self.config.loss.temperature, entropy=False)
        ref.requires_grad_(False)
        ref.eval()
        kind = self.accelerator.distributed_type
        if kind == DistributedType.DEEPSPEED:
            return prepare_deepspeed(ref, self.accelerator)
        if kind == DistributedType.FSDP:
            return prepare_fsdp(ref, self.accelerator)
        return ref.to(self.device)

    def _require_ready(self) -> None:
        if not self._ready:
            raise BackendError("the backend is not set up; call setup() first")

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
        if self.is_lora:
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
        self._require_ready()
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

    # -- training --------------------------------------------------------------------------------------

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
        self._rng.shuffle(shuffled)
        return [shuffled[i::n] for i in range(n)]

    def step(self, samples: Sequence[Sample]) -> dict[str, float]:
        self._require_ready()
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
        """The batch loss with its graph (no update), on one process: for tests and diagnostics.

        `old_logps` (per sample, aligned with its completion ids) stand for the policy before this batch's
        first update; by default the current policy's (strictly on-policy).
        """
        self._require_ready()
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
        self._step += 1
        loss_total = self._sum_over_ranks(loss_value)[0]
        return loss_total, stats, entropy, grad_norm, real_tokens

    # -- checkpoints and export ------------------------------------------------------------------------

    def _keep_trainable_weights(self, models: list[Any], weights: list[dict[str, Any]], _dir: str) -> None:
        """With LoRA, checkpoints hold only the trainable (adapter) weights, not the frozen base."""
        if not self.is_lora:
            return
        for i, model in enumerate(models):
            if i < len(weights):
                trainable = {name for name, p in model.named_parameters() if p.requires_grad}
                weights[i] = {k: v for k, v in weights[i].items() if k in trainable}

    def save(self, path: Path, extra: dict[str, Any] | None = None) -> None:
        self._require_ready()
        acc = self.accelerator
        path = Path(path)
        partial = path.parent / f".{path.name}.partial"
        if acc.is_main_process:
            shutil.rmtree(partial, ignore_errors=True)
            partial.parent.mkdir(parents=True, exist_ok=True)
        acc.wait_for_everyone()
        acc.save_state(str(partial))
        acc.wait_for_everyone()
        if acc.is_main_process:
            state = {
                "global_step": self._step,
                "model": self.config.model,
                "lora": self.is_lora,
                "extra": extra or {},
            }
            (partial / _RNG_FILE).write_text(json.dumps(self._rng.getstate()))
            (partial / STATE_FILE).write_text(json.dumps(state, indent=2))
            if path.exists():
                shutil.rmtree(path)
            partial.rename(path)
        acc.wait_for_everyone()

    def load(self, path: Path) -> dict[str, Any]:
        self._require_ready()
        path = Path(path)
        state_file = path / STATE_FILE
        if not state_file.is_file():
            raise CheckpointError(
                f"{path} is not a complete checkpoint (no {STATE_FILE}); resume from another one"
            )
        state = json.loads(state_file.read_text())
        if bool(state.get("lora")) != self.is_lora:
            raise CheckpointError(
                f"{path} was written by a {'LoRA' if state.get('lora') else 'full'} run but lora.rank is "
                f"{self.config.lora.rank}; use the settings the run was started with"
            )
        self.accelerator.load_state(str(path), strict=not self.is_lora)
        version, internal, gauss = json.loads((path / _RNG_FILE).read_text())
        self._rng.setstate((version, tuple(internal), gauss))
        self._step = int(state["global_step"])
        extra: dict[str, Any] = state.get("extra", {})
        return extra

    def export(self, path: Path, *, merged: bool = False) -> ExportResult:
        self._require_ready()
        acc = self.accelerator
        path = Path(path)
        state_dict = acc.get_state_dict(self.model)
        if acc.is_main_process:
            path.mkdir(parents=True, exist_ok=True)
            model = acc.unwrap_model(self.model)
            if self.is_lora and merged:
                with tempfile.TemporaryDirectory() as tmp:
                    model.save_pretrained(tmp, state_dict=state_dict)
                    self._save_merged(Path(tmp), path)
            else:
                model.save_pretrained(path, state_dict=state_dict, safe_serialization=True)
            self.tokenizer.save_pretrained(path)
        acc.wait_for_everyone()
        kind: Literal["lora", "full"] = "lora" if self.is_lora and not merged else "full"
        return ExportResult(path=path, kind=kind, base_model=self.config.model)

    def _save_merged(self, adapter: Path, path: Path) -> None:
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        base = AutoModelForCausalLM.from_pretrained(self.config.model, dtype=self.dtype)
        merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
        merged.save_pretrained(path, safe_serialization=True)

    def close(self) -> None:
        if self._ready:
            self.accelerator.end_training()
            self.accelerator.free_memory()
            self._ready = False
