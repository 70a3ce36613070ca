"""`nbagent-train rl` (the online loop; its parameters are `RL_PARAMS`) and `nbagent-train eval`
(before/after tables). The loop and evaluation load when a command runs, not when the app starts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from nbagent_train.cli.options import RL_FLAGS, RL_PARAMS, console, resolve_config, takes
from nbagent_train.config.loading import parse_override
from nbagent_train.config.rl import RLConfig


@takes(RL_PARAMS)
def rl_command(
    *,
    config: Path | None,
    resume: Path | None,
    run_dir: Path | None,
    set_: list[str] | None,
    **flags: Any,
) -> None:
    """Online RL: serve the policy with vLLM, collect episodes, train, publish the new weights, repeat."""
    from nbagent_train.rl import load_run_config, reward_trend, rl

    flags["run_dir"] = None if run_dir is None else str(run_dir)
    if resume is not None:
        if config is not None or run_dir is not None:
            raise typer.BadParameter("--resume reuses the run folder's config; drop --config and --run-dir")
        overrides = dict(parse_override(s) for s in set_ or [])
        overrides |= {RL_FLAGS[k]: v for k, v in flags.items() if v is not None}
        cfg = load_run_config(resume, overrides)
    else:
        cfg = resolve_config(config, flags, set_ or [], flag_map=RL_FLAGS, cls=RLConfig)
    result = rl(cfg, resume=resume is not None, console=console)
    if result.records:
        first, last = reward_trend(result.records, window=3)
        console.print(
            f"done: {result.iterations_done} iterations, policy version {result.policy_version}, "
            f"{result.wall_s / 60:.1f} min in iterations; training reward {first:.3f} (first iterations) -> "
            f"{last:.3f} (last); curve in {result.run_dir / 'reward.png'}"
        )


def eval_command(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML recipe (environment, agent).")
    ] = None,
    run: Annotated[
        Path | None,
        typer.Option("--run", help="A run folder: compare its newest published adapter to the base."),
    ] = None,
    adapter: Annotated[
        list[Path] | None, typer.Option(help="LoRA adapter folder(s) to evaluate next to the base model.")
    ] = None,
    split: Annotated[str | None, typer.Option(help="Split to evaluate (default: env.eval_split).")] = None,
    limit: Annotated[int | None, typer.Option(help="Evaluate the first N tasks of the split.")] = None,
    samples: Annotated[int, typer.Option(help="Episodes per task (pass@k / mean@k).")] = 1,
    policy_url: Annotated[str | None, typer.Option(help="A running vLLM server (LoRA enabled).")] = None,
    out: Annotated[Path | None, typer.Option(help="Folder for the trajectories and report.json.")] = None,
    no_base: Annotated[bool, typer.Option("--no-base", help="Skip the base model.")] = False,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Any config field.")] = None,
) -> None:
    """Before/after table: the base policy and trained weights on the same evaluation tasks."""
    from nbagent_train.rl import EvalPlan, load_run_config, run_eval
    from nbagent_train.runs.folder import RunFolder

    sets = list(set_ or [])
    if policy_url is not None:
        sets.append(f"server.policy_url={policy_url}")
    if run is not None and config is None:
        cfg = load_run_config(run, dict(parse_override(s) for s in sets))
    else:
        cfg = resolve_config(config, {}, sets, flag_map={}, cls=RLConfig)
    adapters = list(adapter or [])
    if run is not None:
        newest = RunFolder(run).newest_adapter()
        if newest is None:
            raise typer.BadParameter(f"{run} has no published adapter yet")
        adapters.append(newest)
    if no_base and not adapters:
        raise typer.BadParameter("nothing to evaluate: give --adapter or --run, or drop --no-base")
    plan = EvalPlan(
        split=split or cfg.env.eval_split,
        limit=limit,
        samples=samples,
        adapters=adapters,
        include_base=not no_base,
        out=out or (run / "eval" if run is not None else Path("runs") / "eval"),
    )
    run_eval(cfg, plan, console=console)
