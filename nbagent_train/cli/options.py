"""The parameters of `fit`, `sft` and `rl`, each declared once with the config field it sets, and how a
command's values become its config: the recipe file, then ``--set`` overrides, then the flags given.

A command takes keyword arguments (those it reads itself by name, the rest as ``**values``); `takes(PARAMS)`
gives it the typer signature of its parameter list, so a parameter two commands share is one `Param`
that both lists name.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from nbagent.output_files import check_output_folder
from nbagent_train.config.base import TrainConfig
from nbagent_train.config.loading import ConfigT, build_config, parse_override, read_config_file, set_dotted

CommandT = TypeVar("CommandT", bound=Callable[..., None])
TrainConfigT = TypeVar("TrainConfigT", bound=TrainConfig)

console = Console()
"""Where the commands print progress and results (stdout; `app.main` prints errors on stderr)."""


@dataclass(frozen=True)
class Param:
    """One command-line parameter: its name, its typer declaration and default, and the dotted config
    field its value sets (None: the command reads the value itself)."""

    name: str
    hint: Any
    field: str | None = None
    default: Any = None


def option(
    name: str,
    kind: Any,
    help: str | None = None,
    *,
    field: str | None = None,
    decls: tuple[str, ...] = (),
    default: Any = None,
) -> Param:
    """A `Param` for ``typer.Option(*decls, help=help)`` (no `decls`: the flag is ``--name``)."""
    return Param(name, Annotated[kind, typer.Option(*decls, help=help)], field, default)


def takes(params: Sequence[Param]) -> Callable[[CommandT], CommandT]:
    """Give a command the typer signature of `params`, in their order (the order of its ``--help``)."""
    signature = inspect.Signature(
        [
            inspect.Parameter(p.name, inspect.Parameter.KEYWORD_ONLY, default=p.default, annotation=p.hint)
            for p in params
        ]
    )

    def decorate(command: CommandT) -> CommandT:
        command.__signature__ = signature  # type: ignore[attr-defined]
        return command

    return decorate


def flag_fields(params: Sequence[Param]) -> dict[str, str]:
    """Parameter name -> config field, for the parameters that set one."""
    return {p.name: p.field for p in params if p.field is not None}


MICRO_BATCH_TOKENS = option(
    "micro_batch_tokens", int | None, "Padded tokens per forward pass.", field="run.micro_batch_tokens"
)
LR = option("lr", float | None, "Learning rate.", field="optim.learning_rate")
LORA_RANK = option("lora_rank", int | None, "LoRA rank; 0 trains all weights.", field="lora.rank")
ALGO = option("algo", str | None, "grpo | dr_grpo | rloo | reinforce_pp", field="advantage.estimator")
SEED = option("seed", int | None, "Random seed.", field="run.seed")

# `fit` and `sft`: what to train on and where, the policy, the schedule, the rest (each command adds its
# own parameters between these groups).
RUN_PARAMS = (
    option(
        "trajectories",
        list[Path] | None,
        "Trajectory JSONL file(s) written by nbagent (default: the recipe's).",
        field="trajectories",
        decls=("--trajectories", "-t"),
    ),
    Param(
        "more_trajectories",
        Annotated[
            list[Path] | None, typer.Argument(help="More trajectory files (after --trajectories A.jsonl).")
        ],
    ),
    option("model", str | None, "Policy: HF model folder, or smollm2-135m-instruct.", field="model"),
    option("out", Path | None, "Run folder for checkpoints, metrics and weights.", field="out"),
    option("config", Path | None, "YAML recipe.", decls=("--config", "-c")),
    option("resume", bool, "Continue the run in --out from its last checkpoint.", default=False),
)
POLICY_PARAMS = (
    option("tokenizer", str | None, "Tokenizer folder if not the model's.", field="tokenizer"),
    option("backend", str | None, "Trainer backend (default: trl).", field="backend"),
    LORA_RANK,
)
SCHEDULE_PARAMS = (
    LR,
    option("epochs", int | None, "Passes over the trajectories.", field="run.epochs"),
    option("max_steps", int | None, "Stop after this many optimizer steps.", field="run.max_steps"),
)
REST_PARAMS = (
    option(
        "max_prompt_tokens",
        int | None,
        "Prompt limit (see prompt_overflow).",
        field="samples.max_prompt_tokens",
    ),
    option(
        "max_completion_tokens",
        int | None,
        "Longer completions are cut.",
        field="samples.max_completion_tokens",
    ),
    option("dtype", str | None, "auto | float32 | bfloat16 | float16", field="run.dtype"),
    option(
        "gradient_checkpointing",
        bool | None,
        field="run.gradient_checkpointing",
        decls=("--gradient-checkpointing/--no-gradient-checkpointing",),
    ),
    option("save_every", int | None, "Checkpoint every N iterations.", field="run.save_every"),
    SEED,
    option(
        "export_merged",
        bool | None,
        "LoRA: also save merged.",
        field="export_merged",
        decls=("--export-merged/--no-export-merged",),
    ),
    option("set_", list[str] | None, "Any config field: --set run.seed=1", decls=("--set",)),
)

FIT_PARAMS = (
    *RUN_PARAMS,
    *POLICY_PARAMS,
    ALGO,
    option("mode", str | None, "Samples: per_step | merged.", field="samples.mode"),
    *SCHEDULE_PARAMS,
    option("batch_groups", int | None, "Task groups per RL batch.", field="run.batch_groups"),
    MICRO_BATCH_TOKENS,
    option("kl_coef", float | None, "KL-to-reference loss weight.", field="loss.kl_coef"),
    option("clip_low", float | None, "PPO clip below 1.", field="loss.clip_low"),
    option("clip_high", float | None, "PPO clip above 1.", field="loss.clip_high"),
    *REST_PARAMS,
)
SFT_PARAMS = (
    *RUN_PARAMS,
    option(
        "success_key",
        str | None,
        "Keep episodes whose reward breakdown has this key >= 1.",
        field="select.success_key",
    ),
    option("min_reward", float | None, "Keep episodes with total reward >= this.", field="select.min_reward"),
    *POLICY_PARAMS,
    option("mode", str | None, "Samples: merged (default) | per_step.", field="samples.mode"),
    *SCHEDULE_PARAMS,
    option("batch_episodes", int | None, "Episodes per batch (default 8).", field="run.batch_groups"),
    MICRO_BATCH_TOKENS,
    *REST_PARAMS,
)
RL_PARAMS = (
    option("config", Path | None, "YAML recipe (recipes/*.yaml).", decls=("--config", "-c")),
    option(
        "resume",
        Path | None,
        "Continue the run in this folder from its last checkpoint (its config is reused).",
    ),
    option("run_dir", Path | None, "Run folder (default runs/<timestamp>).", field="run_dir"),
    option("model", str | None, "Policy: HF folder or name (smollm2-135m-instruct).", field="model"),
    option("iterations", int | None, "Iterations to run in total.", field="loop.iterations"),
    option(
        "staleness", int | None, "Max policy versions a batch may lag (0: on-policy).", field="loop.staleness"
    ),
    option(
        "policy_url",
        str | None,
        "Use this running vLLM server (LoRA enabled) instead of launching one.",
        field="server.policy_url",
    ),
    option(
        "tasks_per_iteration",
        int | None,
        "Tasks per iteration (B).",
        field="rollout.tasks_per_iteration",
        decls=("--tasks",),
    ),
    option(
        "samples_per_task",
        int | None,
        "Episodes per task (K).",
        field="rollout.samples_per_task",
        decls=("--samples",),
    ),
    option("concurrency", int | None, "Episodes in flight.", field="rollout.concurrency"),
    LR,
    LORA_RANK,
    ALGO,
    SEED,
    option("set_", list[str] | None, "Any config field: --set loop.staleness=1", decls=("--set",)),
)

# CLI parameter -> config field: every such value of `fit`, `sft` and `rl` lands in the config.
FIT_FLAGS = flag_fields(FIT_PARAMS)
SFT_FLAGS = flag_fields(SFT_PARAMS)
RL_FLAGS = flag_fields(RL_PARAMS)


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


def training_config(
    values: dict[str, Any], flag_map: dict[str, str], cls: type[TrainConfigT]
) -> TrainConfigT:
    """The config of `fit` or `sft` from the values of its `RUN_PARAMS` and flags; its run folder checked."""
    flags = {k: v for k, v in values.items() if k in flag_map}
    given = [str(p) for p in [*(values["trajectories"] or []), *(values["more_trajectories"] or [])]]
    flags["trajectories"] = given or None  # none given: the recipe's (a missing list is a clear error later)
    flags["out"] = None if values["out"] is None else str(values["out"])
    cfg = resolve_config(values["config"], flags, values["set_"] or [], flag_map=flag_map, cls=cls)
    if cfg.out is not None:
        check_output_folder(cfg.out, "the run folder")
    return cfg
