"""`nbagent-train fit` (trajectory files -> weights) and `nbagent-train sft` (the same on the episodes that
went well); their parameters are `FIT_PARAMS` and `SFT_PARAMS`."""

from __future__ import annotations

from typing import Any

from nbagent_train.cli.options import (
    FIT_FLAGS,
    FIT_PARAMS,
    SFT_FLAGS,
    SFT_PARAMS,
    console,
    takes,
    training_config,
)
from nbagent_train.config.base import TrainConfig
from nbagent_train.config.sft import SFTConfig


@takes(FIT_PARAMS)
def fit_command(*, resume: bool, **values: Any) -> None:
    """Train a policy on recorded trajectories and save servable weights (LoRA adapter or full model)."""
    from nbagent_train.fit import fit

    fit(training_config(values, FIT_FLAGS, TrainConfig), resume=resume, console=console)


@takes(SFT_PARAMS)
def sft_command(*, resume: bool, **values: Any) -> None:
    """Supervised fine-tuning on the episodes that pass `select` (default: those that submitted an answer);
    saves a LoRA adapter (or full model) that `rl` can start from (lora.init_adapter)."""
    from nbagent_train.sft import sft

    sft(training_config(values, SFT_FLAGS, SFTConfig), resume=resume, console=console)
