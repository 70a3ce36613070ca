"""The training configuration: `TrainConfig`, one pydantic model that every `fit` flag maps onto, and its
sections (`samples`, `advantage`, `loss`, `lora`, `optim`, `run`).

A recipe holds any subset of these fields, nested by section; `nbagent_train.config.loading` reads it,
applies the overrides and validates the whole once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nbagent_train.errors import TrainConfigError

Estimator = Literal["grpo", "dr_grpo", "rloo", "reinforce_pp"]
Aggregation = Literal["token_mean", "sequence_mean", "constant"]
Objective = Literal["policy_gradient", "sft"]

SMOLLM2_ALIAS = "smollm2-135m-instruct"
"""`model: smollm2-135m-instruct` means the SmolLM2 folder `nbagent.models.local.ensure_smollm2()` makes."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SampleConfig(_Section):
    """How trajectories become training samples (see docs/training.md, "From trajectories to samples")."""

    mode: Literal["per_step", "merged"] = "per_step"
    """`per_step`: one sample per model call (as L0). `merged`: consecutive steps whose prompt extends the
    previous prompt + completion exactly become one sequence, observation tokens masked."""
    max_prompt_tokens: int | None = Field(default=16384, gt=0)
    max_completion_tokens: int | None = Field(default=3072, gt=0)
    prompt_overflow: Literal["drop", "truncate_left"] = "drop"
    """What to do with a prompt longer than `max_prompt_tokens`: drop the sample (default: the model never
    saw a shorter context) or keep its last `max_prompt_tokens` tokens."""
    allow_retokenized: bool = True
    """Steps recorded without token ids are re-tokenized with the policy's chat template (and warned
    about); False refuses them with an error instead."""
    missing_reward: Literal["error", "zero", "drop"] = "error"
    """An episode without a reward: stop with an error, train on it with reward 0, or drop it (counted)."""


class AdvantageConfig(_Section):
    """Which advantage estimator, and its settings."""

    estimator: Estimator = "grpo"
    scale_std: bool = True
    """GRPO only: divide the group-centred reward by the group's standard deviation (+1e-4, as TRL)."""
    gamma: float = Field(default=0.95, ge=0.0, le=1.0)
    """REINFORCE++ only: per-step discount of the return (G_t = r_t + gamma * G_{t+1})."""
    whiten: bool = True
    """REINFORCE++ only: whiten the returns over the batch (mean 0, std 1, weighted by scored tokens)."""
    dynamic_sampling: bool = False
    """Drop groups whose rewards are all equal (no learning signal), as DAPO / L0."""
    dynamic_sampling_p: float = Field(default=1.0, ge=0.0, le=1.0)
    """Probability with which each zero-variance group is dropped (L0 uses 0.5)."""


class LossConfig(_Section):
    """The policy loss; names and defaults follow TRL's GRPOConfig where the option exists there."""

    clip_low: float = Field(default=0.2, ge=0.0)
    clip_high: float = Field(default=0.2, ge=0.0)
    aggregation: Aggregation | None = None
    """`token_mean` (every scored token weighs the same; TRL's `dapo`), `sequence_mean` (TRL's `grpo`),
    `constant` (Dr. GRPO: sum / (sequences * constant_normalizer)). Default: `constant` for dr_grpo,
    `token_mean` otherwise."""
    constant_normalizer: int | None = Field(default=None, gt=0)
    """Tokens per sequence in the `constant` normalizer; default `samples.max_completion_tokens`."""
    kl_coef: float = Field(default=0.0, ge=0.0)
    """Weight of the KL-to-reference loss term (0 disables it and the reference forward pass)."""
    kl_estimator: Literal["k1", "k3"] = "k3"
    kl_ratio_correction: bool = False
    """Multiply the per-token KL by the policy ratio (TRL's `use_bias_correction_kl`)."""
    is_correction: bool = True
    """Truncated importance sampling against the behaviour logprobs recorded by the server."""
    is_mode: Literal["token_truncate", "token_mask", "sequence_truncate", "sequence_mask"] = "token_truncate"
    is_cap: float | None = Field(default=2.0, gt=0.0)
    is_floor: float | None = Field(default=None, ge=0.0)
    temperature: float = Field(default=1.0, gt=0.0)
    """Sampling temperature the behaviour policy used; logits are divided by it (as TRL does)."""


class LoraSettings(_Section):
    """LoRA through PEFT; `rank: 0` trains all weights instead."""

    rank: int = Field(default=16, ge=0)
    alpha: int | None = Field(default=None, gt=0)
    """Default: twice the rank."""
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    init_adapter: Path | None = None
    """A PEFT adapter folder (e.g. an `nbagent-train sft` run's ``final/``) to start from, trainable,
    instead of a fresh LoRA; its rank and target modules must match this section's."""

    @model_validator(mode="after")
    def _check_init_adapter(self) -> LoraSettings:
        if self.init_adapter is not None and self.rank == 0:
            raise ValueError("lora.init_adapter needs LoRA: set lora.rank to the adapter's rank, not 0")
        return self


class OptimConfig(_Section):
    """AdamW and its schedule."""

    learning_rate: float = Field(default=1e-5, gt=0.0)
    weight_decay: float = Field(default=0.0, ge=0.0)
    adam_beta1: float = Field(default=0.9, ge=0.0, lt=1.0)
    adam_beta2: float = Field(default=0.999, ge=0.0, lt=1.0)
    adam_epsilon: float = Field(default=1e-8, gt=0.0)
    max_grad_norm: float | None = Field(default=1.0, gt=0.0)
    lr_scheduler: Literal["constant", "linear", "cosine"] = "constant"
    warmup_steps: int = Field(default=0, ge=0)


class RunConfig(_Section):
    """Batching, precision, checkpoints and logging."""

    micro_batch_tokens: int | None = Field(default=None, gt=0)
    """Gradient accumulation by token budget: a forward pass holds at most this many (padded) tokens.
    Default: 8,192 on a GPU, 2,048 on a CPU (where larger ones are no faster); either way lowered to what
    the free memory holds."""
    batch_groups: int | None = Field(default=None, gt=0)
    """`fit`: task groups per RL batch (default: all groups in one batch); `sft`: episodes per batch."""
    mini_batches: int = Field(default=1, gt=0)
    """Optimizer steps per RL batch (the batch is split into this many parts)."""
    ppo_epochs: int = Field(default=1, gt=0)
    """Passes over each RL batch (TRL's `num_iterations`); >1 makes the PPO clip matter."""
    epochs: int = Field(default=1, gt=0)
    """`fit`: passes over the whole trajectory set."""
    max_steps: int | None = Field(default=None, gt=0)
    """Stop after this many optimizer steps."""
    seed: int = 0
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weights' dtype; `auto` is bfloat16 on a GPU that supports it, float32 otherwise."""
    gradient_checkpointing: bool = True
    """Recompute each layer's activations in backward instead of keeping them (as TRL's GRPOConfig): about
    a third more compute for a fraction of the activation memory; False is faster where memory allows."""
    save_every: int = Field(default=0, ge=0)
    """Write a resumable checkpoint every N optimizer steps (0: only at the end)."""
    keep_checkpoints: int = Field(default=2, gt=0)
    log_entropy: bool = True
    tensorboard: bool = True


class TrainConfig(BaseModel):
    """Everything `nbagent-train fit` needs. Subclass it (extra sections) for other commands."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    model: str = ""
    """Policy: a Hugging Face folder (or hub name where the hub is reachable); `smollm2-135m-instruct`
    for the SmolLM2 folder nbagent converts locally."""
    tokenizer: str | None = None
    """Tokenizer folder when it differs from `model` (used only to re-tokenize steps without ids)."""
    trajectories: list[Path] = Field(default_factory=list)
    out: Path | None = None
    backend: str = "trl"
    objective: Objective = "policy_gradient"
    """`policy_gradient`: the clipped PG loss on advantages; `sft`: token-mean negative log-likelihood of
    the completion tokens (`nbagent-train sft`)."""
    export_merged: bool = False
    """LoRA runs: also write the merged full checkpoint next to the adapter."""
    samples: SampleConfig = Field(default_factory=lambda: SampleConfig())
    advantage: AdvantageConfig = Field(default_factory=lambda: AdvantageConfig())
    loss: LossConfig = Field(default_factory=lambda: LossConfig())
    lora: LoraSettings = Field(default_factory=lambda: LoraSettings())
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig())
    run: RunConfig = Field(default_factory=lambda: RunConfig())

    @model_validator(mode="after")
    def _check_clip_and_is(self) -> TrainConfig:
        cap, floor = self.loss.is_cap, self.loss.is_floor
        if cap is not None and floor is not None and floor > cap:
            raise ValueError(f"loss.is_floor ({floor}) is above loss.is_cap ({cap})")
        return self

    def resolved_model(self) -> str:
        """The policy folder or name, with the SmolLM2 alias turned into its converted folder."""
        if self.model.lower() == SMOLLM2_ALIAS:
            from nbagent.models.local import ensure_smollm2

            return str(ensure_smollm2())
        return self.model

    @property
    def aggregation(self) -> Aggregation:
        """The loss aggregation in effect (token mean for `sft`; else the estimator's natural one unless
        set)."""
        if self.objective == "sft":
            return "token_mean"
        if self.loss.aggregation is not None:
            return self.loss.aggregation
        return "constant" if self.advantage.estimator == "dr_grpo" else "token_mean"

    @property
    def constant_normalizer(self) -> int:
        value = self.loss.constant_normalizer or self.samples.max_completion_tokens
        if value is None:
            raise TrainConfigError(
                "loss.constant_normalizer: the `constant` aggregation needs a token count; set "
                "loss.constant_normalizer or samples.max_completion_tokens"
            )
        return value
