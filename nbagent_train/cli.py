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
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from nbagent.errors import NBAgentError
from nbagent.outputs import check_output_folder
from nbagent_train.config import (
    ConfigT,
    TrainConfig,
    build_config,
    parse_override,
    read_config_file,
    set_dotted,
)

COMMAND_MODULES: tuple[str, ...] = ("nbagent_train.loop", "nbagent_train.evaluation")
"""Modules that may add subcommands through `register_commands(app: typer.Typer) -> None`."""

app = typer.Typer(
    name="nbagent-train",
    help="RL fine-tuning from nbagent trajectories.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()

# CLI flag -> config field. Every flag of `fit` lands in the config, nowhere else.
FIT_FLAGS: dict[str, str] = {
    "trajectories": "trajectories",
    "model": "model",
    "tokenizer": "tokenizer",
    "out": "out",
    "backend": "backend",
    "lora_rank": "lora.rank",
    "algo": "advantage.estimator",
    "mode": "samples.mode",
    "lr": "optim.learning_rate",
    "epochs": "run.epochs",
    "max_steps": "run.max_steps",
    "batch_groups": "run.batch_groups",
    "micro_batch_tokens": "run.micro_batch_tokens",
    "kl_coef": "loss.kl_coef",
    "clip_low": "loss.clip_low",
    "clip_high": "loss.clip_high",
    "max_prompt_tokens": "samples.max_prompt_tokens",
    "max_completion_tokens": "samples.max_completion_tokens",
    "dtype": "run.dtype",
    "gradient_checkpointing": "run.gradient_checkpointing",
    "save_every": "run.save_every",
    "seed": "run.seed",
    "export_merged": "export_merged",
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


@app.command()
def fit(
    trajectories: Annotated[
        list[Path],
        typer.Option("--trajectories", "-t", help="Trajectory JSONL file(s) written by nbagent."),
    ],
    more_trajectories: Annotated[
        list[Path] | None, typer.Argument(help="More trajectory files (after --trajectories A.jsonl).")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Policy model folder (Hugging Face format).")] = None,
    out: Annotated[Path | None, typer.Option(help="Run folder for checkpoints, metrics and weights.")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML recipe.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its last checkpoint.")] = False,
    tokenizer: Annotated[str | None, typer.Option(help="Tokenizer folder if not the model's.")] = None,
    backend: Annotated[str | None, typer.Option(help="Trainer backend (default: trl).")] = None,
    lora_rank: Annotated[int | None, typer.Option(help="LoRA rank; 0 trains all weights.")] = None,
    algo: Annotated[str | None, typer.Option(help="grpo | dr_grpo | rloo | reinforce_pp")] = None,
    mode: Annotated[str | None, typer.Option(help="Samples: per_step | merged.")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Passes over the trajectories.")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many optimizer steps.")] = None,
    batch_groups: Annotated[int | None, typer.Option(help="Task groups per RL batch.")] = None,
    micro_batch_tokens: Annotated[int | None, typer.Option(help="Padded tokens per forward pass.")] = None,
    kl_coef: Annotated[float | None, typer.Option(help="KL-to-reference loss weight.")] = None,
    clip_low: Annotated[float | None, typer.Option(help="PPO clip below 1.")] = None,
    clip_high: Annotated[float | None, typer.Option(help="PPO clip above 1.")] = None,
    max_prompt_tokens: Annotated[int | None, typer.Option(help="Prompt limit (see prompt_overflow).")] = None,
    max_completion_tokens: Annotated[int | None, typer.Option(help="Longer completions are cut.")] = None,
    dtype: Annotated[str | None, typer.Option(help="auto | float32 | bfloat16 | float16")] = None,
    gradient_checkpointing: Annotated[
        bool | None, typer.Option("--gradient-checkpointing/--no-gradient-checkpointing")
    ] = None,
    save_every: Annotated[int | None, typer.Option(help="Checkpoint every N iterations.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    export_merged: Annotated[
        bool | None, typer.Option("--export-merged/--no-export-merged", help="LoRA: also save merged.")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Any config field: --set loss.kl_coef=0.001")
    ] = None,
) -> None:
    """Train a policy on recorded trajectories and save servable weights (LoRA adapter or full model)."""
    from nbagent_train.fit import fit as run_fit

    flags = {k: v for k, v in locals().items() if k in FIT_FLAGS}
    flags["trajectories"] = [str(p) for p in [*trajectories, *(more_trajectories or [])]]
    flags["out"] = None if out is None else str(out)
    cfg: TrainConfig = resolve_config(config, flags, set_ or [])
    if cfg.out is not None:
        check_output_folder(cfg.out, "the run folder")
    run_fit(cfg, resume=resume, console=console)


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
