"""The `nbagent-train sft` recipe: `TrainConfig` plus `select` (which recorded episodes to train on)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from nbagent.trajectory import Termination
from nbagent_train.config.base import Objective, TrainConfig, _Section

SFT_EPISODES_PER_BATCH = 8
"""Default `run.batch_groups` of `sft`: episodes per batch (one optimizer step per `run.mini_batches`)."""


class SelectConfig(_Section):
    """Which recorded episodes `sft` trains on; the filters apply in this order, each one counted."""

    terminations: list[Termination] | None = Field(default_factory=lambda: [Termination.SUBMITTED])
    """Keep episodes that ended this way (default: with an answer); null keeps every termination."""
    min_reward: float | None = None
    """Keep episodes whose total reward is at least this (an episode without a reward is dropped)."""
    success_key: str | None = None
    """Keep episodes whose reward breakdown has this key at 1.0 or more (e.g. ``correct``)."""
    dedupe: bool = True
    """Keep identical episodes (same task, same completions) once."""


class SFTConfig(TrainConfig):
    """Everything `nbagent-train sft` needs: `TrainConfig` with the `select` section.

    Defaults that differ from `fit`: ``objective: sft``, ``samples.mode: merged`` (a multi-step episode is
    one sequence where its prompts extend each other), ``samples.missing_reward: zero`` (the loss does not
    use rewards; the filters drop unscored episodes when they need a reward) and ``run.batch_groups: 8``.
    """

    objective: Objective = "sft"
    select: SelectConfig = Field(default_factory=SelectConfig)

    @model_validator(mode="before")
    @classmethod
    def _sft_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        defaults: dict[str, dict[str, Any]] = {
            "samples": {"mode": "merged", "missing_reward": "zero"},
            "run": {"batch_groups": SFT_EPISODES_PER_BATCH},
        }
        data = dict(data)
        for section, values in defaults.items():
            given = data.get(section)
            if given is None:
                data[section] = values
            elif isinstance(given, dict):
                data[section] = values | given
        return data

    @model_validator(mode="after")
    def _check_objective(self) -> SFTConfig:
        if self.objective != "sft":
            raise ValueError("objective: `nbagent-train sft` trains the sft objective; use `fit` for others")
        return self
