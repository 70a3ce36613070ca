"""`nbagent collect` and `nbagent eval`: many scored episodes of an environment, and their accuracy table.

Both take the model and agent flags of `nbagent run` (see `nbagent.cli`). `collect` writes grouped,
scored trajectories and can resume; `eval` collects the same way (split ``test`` by default) and then
prints and saves the per-dataset table computed from the trajectories' rewards.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from nbagent.cli.app import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    AllowNetworkOption,
    ApiKeyOption,
    BaseUrlOption,
    CellTimeoutOption,
    EpisodeTimeoutOption,
    FormatChoice,
    FormatOption,
    LocalModelOption,
    MaxStepsOption,
    MaxTokensOption,
    ModelOption,
    PrefillOption,
    SandboxOption,
    TemperatureOption,
    ToolOption,
    agent_settings,
    fail,
    one_line_errors,
    resolve_model,
)
from nbagent.errors import ConfigError, NBAgentError
from nbagent.output_files import OutputLock, check_output_file

if TYPE_CHECKING:
    from nbagent.agent.agent import Agent
    from nbagent.environments.base import Environment
    from nbagent.rollout.collect import CollectSummary
    from nbagent.trajectory import TaskSpec

__all__ = ["EndpointAgentFactory", "register"]


@dataclass(frozen=True)
class EndpointAgentFactory:
    """Builds the agent of the shared model/agent flags (same names as the options) for an
    environment. Picklable, so Ray actors build their own model client and agent from it."""

    base_url: str | None = None
    model: str | None = None
    api_key: str | None = None
    local_model: Path | None = None
    max_steps: int = 10
    temperature: float | None = None
    max_tokens: int | None = None
    cell_timeout: float = 60.0
    episode_timeout: float = 240.0
    action_format: FormatChoice | None = None
    prefill: str | None = None
    tool: tuple[str, ...] = ()
    sandbox: bool = True
    """Episodes of model-written code at scale run sandboxed unless asked otherwise."""
    allow_network: bool = False

    def __call__(self, env: Environment) -> Agent[Any, Any]:
        from nbagent.rollout.collect import agent_for_environment

        choice = resolve_model(self.base_url, self.model, self.api_key, self.local_model)
        settings = agent_settings(
            choice,
            max_steps=self.max_steps,
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            cell_timeout=self.cell_timeout,
            episode_timeout=self.episode_timeout,
            action_format=self.action_format,
            prefill=self.prefill,
            tools=list(self.tool),
            sandbox=self.sandbox,
            allow_network=self.allow_network,
        )
        return agent_for_environment(env, choice.model, **settings)


_AGENT_FLAGS = tuple(f.name for f in fields(EndpointAgentFactory))


# --------------------------------------------------------------------------------------------------
# Options of both commands
# --------------------------------------------------------------------------------------------------

EnvOption = Annotated[str, typer.Option("--env", help="Environment name (qa, math, or module.path).")]
DatasetOption = Annotated[
    str | None,
    typer.Option("--dataset", help="Dataset of the environment: a file or a name (qa: demo, hotpotqa, ...)."),
]
EnvArgOption = Annotated[
    list[str] | None,
    typer.Option(
        "--env-arg",
        help="Extra environment argument KEY=VALUE (VALUE read as JSON when it parses; repeatable).",
        show_default=False,
    ),
]
LimitOption = Annotated[int | None, typer.Option("--limit", min=1, help="Only the first N tasks.")]
ConcurrencyOption = Annotated[
    int, typer.Option("--concurrency", "-c", min=1, help="Episodes in flight (kernels in the pool).")
]
ResumeOption = Annotated[
    bool, typer.Option("--resume", help="Skip (task, sample) pairs already in --out and append the rest.")
]
RayOption = Annotated[
    str | None,
    typer.Option(
        "--ray", help="Run episodes on Ray actors: 'local' or a cluster address (ray://... or auto)."
    ),
]
RayActorsOption = Annotated[
    int | None,
    typer.Option("--ray-actors", min=1, help="Ray actors (default: one per 8 episodes in flight)."),
]
InflightOption = Annotated[
    int | None,
    typer.Option(
        "--max-inflight-requests", min=1, help="Most model requests in flight at once (per process)."
    ),
]
TagOption = Annotated[
    str | None, typer.Option("--tag", help="Mixed into group ids, e.g. an RL iteration.", show_default=False)
]
PolicyVersionOption = Annotated[
    str | None, typer.Option("--policy-version", help="Recorded in each trajectory.", show_default=False)
]
JudgeModelOption = Annotated[
    str | None,
    typer.Option("--judge-model", help="qa: grade answers with SimpleQA's LLM judge on this model."),
]
JudgeBaseUrlOption = Annotated[
    str | None, typer.Option("--judge-base-url", help="OpenAI-compatible endpoint of the judge.")
]
ProgressOption = Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")]


def _env_kwargs(flags: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments of the environment's `load_environment` from the command's flags."""
    kwargs: dict[str, Any] = {}
    for item in flags["env_arg"] or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"--env-arg {item!r}: write KEY=VALUE, e.g. --env-arg search=corpus")
        try:
            kwargs[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            kwargs[key.strip()] = raw
    if flags["dataset"] is not None:
        kwargs["dataset"] = flags["dataset"]
    if flags["judge_model"] is not None:
        kwargs["judge_model"] = flags["judge_model"]
        if flags["judge_base_url"] is not None:
            kwargs["judge_base_url"] = flags["judge_base_url"]
    return kwargs


def _policy_version(value: str | None) -> int | str | None:
    """A numeric ``--policy-version`` is recorded as a number, anything else as text."""
    return int(value) if value is not None and value.isdigit() else value


@dataclass
class _Plan:
    env: Environment
    env_source: Any
    tasks: list[TaskSpec]


def _plan(env_name: str, env_kwargs: dict[str, Any], split: str, limit: int | None, ray: str | None) -> _Plan:
    from nbagent.environments.base import load_environment

    env = load_environment(env_name, **env_kwargs)
    tasks = list(env.tasks(split))
    if not tasks:
        raise ConfigError(f"environment {env.name!r} has no tasks in split {split!r}")
    source = functools.partial(load_environment, env_name, **env_kwargs) if ray else env
    return _Plan(env, source, tasks[:limit] if limit else tasks)


def _collect_from_flags(flags: dict[str, Any]) -> tuple[Console, _Plan, CollectSummary]:
    """Run `collect` for a command's flags (its parameters by name). A set-up error exits 1 in one line;
    Ctrl-C exits 130 with a hint to resume (finished episodes are kept)."""
    import anyio

    from nbagent.rollout.collect import collect

    console = Console(stderr=True, highlight=False)
    agent_flags = {name: flags[name] for name in _AGENT_FLAGS}
    factory = EndpointAgentFactory(**{**agent_flags, "tool": tuple(flags["tool"] or ())})
    ray, samples, concurrency, out = flags["ray"], flags["samples"], flags["concurrency"], flags["out"]
    lock = OutputLock(out)  # refuse a second collector before loading anything; `collect` re-enters it
    try:
        check_output_file(out, "the trajectories")
        lock.acquire()
        plan = _plan(flags["env"], _env_kwargs(flags), flags["split"], flags["limit"], ray)
        agent: Any = factory if ray else factory(plan.env)
        console.print(
            Text(
                f"{plan.env.name}: {len(plan.tasks)} tasks x {samples} samples, {concurrency} at once"
                + (f" on Ray ({ray})" if ray else "")
                + f" -> {out}",
                style="dim",
            )
        )
        run = functools.partial(
            collect,
            plan.env_source,
            agent,
            plan.tasks,
            out=out,
            split=flags["split"],
            samples=samples,
            concurrency=concurrency,
            resume=flags["resume"],
            max_inflight_requests=flags["max_inflight_requests"],
            tag=flags["tag"],
            policy_version=_policy_version(flags.get("policy_version")),
            progress=flags["progress"],
            ray=ray,
            ray_actors=flags["ray_actors"],
        )
        summary = anyio.run(run)
    except NBAgentError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        console.print(
            Text(f"Interrupted. Finished episodes are in {out}; continue with --resume.", style="yellow")
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None
    finally:
        lock.release()
    _print_summary(console, summary)
    return console, plan, summary


def _print_summary(console: Console, summary: CollectSummary) -> None:
    mean = "-" if summary.reward_mean is None else f"{summary.reward_mean:.3f}"
    ends = ", ".join(f"{k} {v}" for k, v in summary.terminations.most_common())
    console.print(
        f"{summary.written} episodes written ({summary.skipped} already there), {summary.failed} failed, "
        f"reward mean {mean}, {summary.wall_s:.1f} s ({summary.episodes_per_s:.2f} episodes/s)"
        + (f"; ends: {ends}" if ends else "")
    )
    if summary.truncated_bytes:
        console.print(
            Text(
                f"Removed a torn last record ({summary.truncated_bytes} bytes); it was run again.",
                style="dim",
            )
        )
    if not summary.complete:
        missing = summary.planned - summary.skipped - summary.written
        console.print(Text(f"{missing} episodes were not run; run again with --resume.", style="red"))
    if summary.corrupt_lines:
        console.print(
            Text(f"{summary.corrupt_lines} corrupt line(s) in {summary.out} were skipped.", style="yellow")
        )


# --------------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------------


def collect_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Trajectory JSONL file to append to.")],
    env: EnvOption = "qa",
    dataset: DatasetOption = None,
    env_arg: EnvArgOption = None,
    split: Annotated[str, typer.Option("--split", help="Split of the tasks.")] = "train",
    limit: LimitOption = None,
    samples: Annotated[int, typer.Option("--samples", "-k", min=1, help="Episodes per task.")] = 1,
    concurrency: ConcurrencyOption = 8,
    resume: ResumeOption = False,
    ray: RayOption = None,
    ray_actors: RayActorsOption = None,
    max_inflight_requests: InflightOption = None,
    tag: TagOption = None,
    policy_version: PolicyVersionOption = None,
    judge_model: JudgeModelOption = None,
    judge_base_url: JudgeBaseUrlOption = None,
    base_url: BaseUrlOption = None,
    model: ModelOption = None,
    api_key: ApiKeyOption = None,
    local_model: LocalModelOption = None,
    max_steps: MaxStepsOption = 10,
    temperature: TemperatureOption = None,
    max_tokens: MaxTokensOption = None,
    cell_timeout: CellTimeoutOption = 60.0,
    episode_timeout: EpisodeTimeoutOption = 240.0,
    action_format: FormatOption = None,
    prefill: PrefillOption = None,
    tool: ToolOption = None,
    sandbox: SandboxOption = True,
    allow_network: AllowNetworkOption = False,
    progress: ProgressOption = True,
) -> None:
    """Run N tasks x K samples of an environment, score them, and append each episode to --out."""
    _, _, summary = _collect_from_flags(dict(locals()))
    if not summary.complete:
        raise typer.Exit(EXIT_ERROR)


def eval_command(
    env: EnvOption = "qa",
    dataset: DatasetOption = None,
    env_arg: EnvArgOption = None,
    split: Annotated[str, typer.Option("--split", help="Split of the tasks.")] = "test",
    limit: LimitOption = None,
    samples: Annotated[int, typer.Option("--samples", "-k", min=1, help="Episodes per task (pass@k).")] = 1,
    concurrency: ConcurrencyOption = 8,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Trajectory file (default runs/eval/<env>-<time>.jsonl)."),
    ] = None,
    json_out: Annotated[
        Path | None,
        typer.Option("--json", help="Where to write the table as JSON (default: <out>.metrics.json)."),
    ] = None,
    success_metric: Annotated[
        str,
        typer.Option(
            "--success-metric", help="Reward breakdown key that decides 'solved' ('total' for the total)."
        ),
    ] = "exact_match",
    threshold: Annotated[
        float, typer.Option("--threshold", help="Solved when the metric is at least this.")
    ] = 1.0,
    resume: ResumeOption = False,
    ray: RayOption = None,
    ray_actors: RayActorsOption = None,
    max_inflight_requests: InflightOption = None,
    tag: TagOption = None,
    judge_model: JudgeModelOption = None,
    judge_base_url: JudgeBaseUrlOption = None,
    base_url: BaseUrlOption = None,
    model: ModelOption = None,
    api_key: ApiKeyOption = None,
    local_model: LocalModelOption = None,
    max_steps: MaxStepsOption = 10,
    temperature: TemperatureOption = None,
    max_tokens: MaxTokensOption = None,
    cell_timeout: CellTimeoutOption = 60.0,
    episode_timeout: EpisodeTimeoutOption = 240.0,
    action_format: FormatOption = None,
    prefill: PrefillOption = None,
    tool: ToolOption = None,
    sandbox: SandboxOption = True,
    allow_network: AllowNetworkOption = False,
    progress: ProgressOption = True,
) -> None:
    """Run an environment's tasks and print the accuracy table per dataset (EM, F1, judge, pass@k)."""
    from nbagent.rollout.collect import plan_jobs
    from nbagent.trajectory import read_trajectories
    from nbagent.trajectory.evaluation import evaluate, render_report

    out = out or Path("runs") / "eval" / f"{env.replace(':', '_')}-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
    target = json_out or out.with_suffix(".metrics.json")
    with one_line_errors():
        check_output_file(target, "the table")
    console, plan, summary = _collect_from_flags(dict(locals()))
    planned = {job.key for job in plan_jobs(plan.env.name, plan.tasks, samples, tag)}
    trajectories = [
        t for t in read_trajectories(out, on_error="skip") if (t.group_id, t.sample_index) in planned
    ]
    report = evaluate(trajectories, success_metric=success_metric, threshold=threshold)
    render_report(report, Console(highlight=False))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
    console.print(Text(f"table: {target}; trajectories: {out}", style="dim"))


def register(app: typer.Typer) -> None:
    """Add `collect` and `eval` to the `nbagent` app."""
    app.command("collect")(collect_command)
    app.command("eval")(eval_command)
