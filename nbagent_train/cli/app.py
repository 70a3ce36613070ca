"""`nbagent-train`: the trainer's command line (typer).

Subcommands: `fit` (offline: trajectory files -> weights) here; other modules add theirs (the online loop's
`rl`, `eval`): every module named in `COMMAND_MODULES` that exists is imported and its
`register_commands(app)` is called. Keep such modules light at import time (torch etc. inside functions).
"""

from __future__ import annotations

import importlib
import logging
import signal
import threading
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from nbagent.errors import NBAgentError
from nbagent.output_files import check_output_folder
from nbagent_train.config.base import (
    ConfigT,
    TrainConfig,
    build_config,
    parse_override,
    read_config_file,
    set_dotted,
)

TrainConfigT = TypeVar("TrainConfigT", bound=TrainConfig)

COMMAND_MODULES: tuple[str, ...] = ("nbagent_train.rl.loop",)
"""Modules that may add subcommands through `register_commands(app: typer.Typer) -> None`."""

app = typer.Typer(
    name="nbagent-train",
    help="RL fine-tuning from nbagent trajectories.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()

# CLI flag -> config field. Every flag of `fit` and `sft` lands in the config, nowhere else.
COMMON_FLAGS: dict[str, str] = {
    "trajectories": "trajectories",
    "model": "model",
    "tokenizer": "tokenizer",
    "out": "out",
    "backend": "backend",
    "lora_rank": "lora.rank",
    "mode": "samples.mode",
    "lr": "optim.learning_rate",
    "epochs": "run.epochs",
    "max_steps": "run.max_steps",
    "micro_batch_tokens": "run.micro_batch_tokens",
    "max_prompt_tokens": "samples.max_prompt_tokens",
    "max_completion_tokens": "samples.max_completion_tokens",
    "dtype": "run.dtype",
    "gradient_checkpointing": "run.gradient_checkpointing",
    "save_every": "run.save_every",
    "seed": "run.seed",
    "export_merged": "export_merged",
}
FIT_FLAGS: dict[str, str] = COMMON_FLAGS | {
    "algo": "advantage.estimator",
    "batch_groups": "run.batch_groups",
    "kl_coef": "loss.kl_coef",
    "clip_low": "loss.clip_low",
    "clip_high": "loss.clip_high",
}
SFT_FLAGS: dict[str, str] = COMMON_FLAGS | {
    "batch_episodes": "run.batch_groups",
    "min_reward": "select.min_reward",
    "success_key": "select.success_key",
}


def resolve_config(
    config_file: Path | None,
    flags: dict[str, Any],
    sets: list[str],
    *,
    flag_map: dict[str, str] = FIT_FLAGS,
    cls: type[ConfigT] = TrainConfig,  # type: ignore[assignment]
) -> ConfigT:
    """Recipe file, then `--set` overrides, then explicit flags (flags left at None are not applied)."""
    data = read_config_file(config_file) if config_file is not None else {}
    for item in sets:
        key, value = parse_override(item)
        set_dotted(data, key, value)
    for name, value in flags.items():
        if value is not None:
            set_dotted(data, flag_map[name], value)
    source = f"{config_file} and command-line flags" if config_file is not None else "command-line flags"
    return build_config(data, cls=cls, source=source)


@app.callback()
def _root() -> None:
    """RL fine-tuning from nbagent trajectories."""


# Options `fit` and `sft` share (each command gives them its own defaults).
Trajectories = Annotated[
    list[Path] | None,
    typer.Option(
        "--trajectories", "-t", help="Trajectory JSONL file(s) written by nbagent (default: the recipe's)."
    ),
]
MoreTrajectories = Annotated[
    list[Path] | None, typer.Argument(help="More trajectory files (after --trajectories A.jsonl).")
]
Model = Annotated[str | None, typer.Option(help="Policy: HF model folder, or smollm2-135m-instruct.")]
Out = Annotated[Path | None, typer.Option(help="Run folder for checkpoints, metrics and weights.")]
Recipe = Annotated[Path | None, typer.Option("--config", "-c", help="YAML recipe.")]
Resume = Annotated[bool, typer.Option(help="Continue the run in --out from its last checkpoint.")]
Tokenizer = Annotated[str | None, typer.Option(help="Tokenizer folder if not the model's.")]
Backend = Annotated[str | None, typer.Option(help="Trainer backend (default: trl).")]
LoraRank = Annotated[int | None, typer.Option(help="LoRA rank; 0 trains all weights.")]
Lr = Annotated[float | None, typer.Option(help="Learning rate.")]
Epochs = Annotated[int | None, typer.Option(help="Passes over the trajectories.")]
MaxSteps = Annotated[int | None, typer.Option(help="Stop after this many optimizer steps.")]
MicroBatchTokens = Annotated[int | None, typer.Option(help="Padded tokens per forward pass.")]
MaxPromptTokens = Annotated[int | None, typer.Option(help="Prompt limit (see prompt_overflow).")]
MaxCompletionTokens = Annotated[int | None, typer.Option(help="Longer completions are cut.")]
Dtype = Annotated[str | None, typer.Option(help="auto | float32 | bfloat16 | float16")]
GradientCheckpointing = Annotated[
    bool | None, typer.Option("--gradient-checkpointing/--no-gradient-checkpointing")
]
SaveEvery = Annotated[int | None, typer.Option(help="Checkpoint every N iterations.")]
Seed = Annotated[int | None, typer.Option(help="Random seed.")]
ExportMerged = Annotated[
    bool | None, typer.Option("--export-merged/--no-export-merged", help="LoRA: also save merged.")
]
Sets = Annotated[list[str] | None, typer.Option("--set", help="Any config field: --set run.seed=1")]


def _config_from_flags(
    values: dict[str, Any], flag_map: dict[str, str], cls: type[TrainConfigT]
) -> TrainConfigT:
    """The config of a `fit`-like command from its parameters (`locals()`): recipe, --set, flags."""
    flags = {k: v for k, v in values.items() if k in flag_map}
    given = [str(p) for p in [*(values["trajectories"] or []), *(values["more_trajectories"] or [])]]
    flags["trajectories"] = given or None  # none given: the recipe's (a missing list is a clear error later)
    flags["out"] = None if values["out"] is None else str(values["out"])
    cfg = resolve_config(values["config"], flags, values["set_"] or [], flag_map=flag_map, cls=cls)
    if cfg.out is not None:
        check_output_folder(cfg.out, "the run folder")
    return cfg


@app.command()
def fit(
    trajectories: Trajectories = None,
    more_trajectories: MoreTrajectories = None,
    model: Model = None,
    out: Out = None,
    config: Recipe = None,
    resume: Resume = False,
    tokenizer: Tokenizer = None,
    backend: Backend = None,
    lora_rank: LoraRank = None,
    algo: Annotated[str | None, typer.Option(help="grpo | dr_grpo | rloo | reinforce_pp")] = None,
    mode: Annotated[str | None, typer.Option(help="Samples: per_step | merged.")] = None,
    lr: Lr = None,
    epochs: Epochs = None,
    max_steps: MaxSteps = None,
    batch_groups: Annotated[int | None, typer.Option(help="Task groups per RL batch.")] = None,
    micro_batch_tokens: MicroBatchTokens = None,
    kl_coef: Annotated[float | None, typer.Option(help="KL-to-reference loss weight.")] = None,
    clip_low: Annotated[float | None, typer.Option(help="PPO clip below 1.")] = None,
    clip_high: Annotated[float | None, typer.Option(help="PPO clip above 1.")] = None,
    max_prompt_tokens: MaxPromptTokens = None,
    max_completion_tokens: MaxCompletionTokens = None,
    dtype: Dtype = None,
    gradient_checkpointing: GradientCheckpointing = None,
    save_every: SaveEvery = None,
    seed: Seed = None,
    export_merged: ExportMerged = None,
    set_: Sets = None,
) -> None:
    """Train a policy on recorded trajectories and save servable weights (LoRA adapter or full model)."""
    from nbagent_train.fit import fit as run_fit

    run_fit(_config_from_flags(locals(), FIT_FLAGS, TrainConfig), resume=resume, console=console)


@app.command()
def sft(
    trajectories: Trajectories = None,
    more_trajectories: MoreTrajectories = None,
    model: Model = None,
    out: Out = None,
    config: Recipe = None,
    resume: Resume = False,
    success_key: Annotated[
        str | None, typer.Option(help="Keep episodes whose reward breakdown has this key >= 1.")
    ] = None,
    min_reward: Annotated[float | None, typer.Option(help="Keep episodes with total reward >= this.")] = None,
    tokenizer: Tokenizer = None,
    backend: Backend = None,
    lora_rank: LoraRank = None,
    mode: Annotated[str | None, typer.Option(help="Samples: merged (default) | per_step.")] = None,
    lr: Lr = None,
    epochs: Epochs = None,
    max_steps: MaxSteps = None,
    batch_episodes: Annotated[int | None, typer.Option(help="Episodes per batch (default 8).")] = None,
    micro_batch_tokens: MicroBatchTokens = None,
    max_prompt_tokens: MaxPromptTokens = None,
    max_completion_tokens: MaxCompletionTokens = None,
    dtype: Dtype = None,
    gradient_checkpointing: GradientCheckpointing = None,
    save_every: SaveEvery = None,
    seed: Seed = None,
    export_merged: ExportMerged = None,
    set_: Sets = None,
) -> None:
    """Supervised fine-tuning on the episodes that pass `select` (default: those that submitted an answer);
    saves a LoRA adapter (or full model) that `rl` can start from (lora.init_adapter)."""
    from nbagent_train.sft import SFTConfig
    from nbagent_train.sft import sft as run_sft

    run_sft(_config_from_flags(locals(), SFT_FLAGS, SFTConfig), resume=resume, console=console)


def _register_extensions() -> None:
    """Add the subcommands of `COMMAND_MODULES`; one that fails to load is reported, not fatal."""
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
            register = getattr(module, "register_commands", None)
            if register is not None:
                register(app)
        except ImportError as exc:
            if isinstance(exc, ModuleNotFoundError) and exc.name == name:
                continue
            logging.getLogger("nbagent_train").warning("the commands of %s are unavailable: %s", name, exc)


def exit_on_sigterm() -> None:
    """Make SIGTERM (``kill``, a scheduler's cancel) end the process like Ctrl-C does, with exit code
    143: ``finally`` blocks and exit handlers run, so a launched vLLM server is stopped, not orphaned."""

    def terminate(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, terminate)


def main() -> None:
    """Console-script entry point: expected failures (nbagent's own errors: bad settings, paths, a locked
    run folder) end with one line ``error: ...`` and exit code 2."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    exit_on_sigterm()
    _register_extensions()
    try:
        app()
    except NBAgentError as exc:
        console.print(Text(f"error: {exc}"), style="red", highlight=False, soft_wrap=True)
        raise SystemExit(2) from None
