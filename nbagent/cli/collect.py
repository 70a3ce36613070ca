"""`nbagent collect` and `nbagent eval`: many scored episodes of an environment, and their accuracy table.

Both take the model and agent flags of `nbagent run` (`nbagent.cli.options`), sandboxed by default.
`collect` writes grouped, scored trajectories and can resume; `eval` collects the same way (split
``test`` by default) and then prints and saves the per-dataset table computed from the trajectories'
rewards.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from nbagent.cli.options import (
    ENDPOINT_EPISODE_TIMEOUT,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    AgentFlags,
    EpisodeTimeoutOption,
    SandboxOption,
    fail,
    one_line_errors,
    with_flag_groups,
)
from nbagent.errors import ConfigError, NBAgentError
from nbagent.output_files import OutputLock, check_output_file

if TYPE_CHECKING:
    from nbagent.agent import Agent
    from nbagent.environments import Environment
    from nbagent.rollout import CollectSummary
    from nbagent.trajectory import TaskSpec

__all__ = ["EndpointAgentFactory", "collect_command", "eval_command"]


@dataclass(frozen=True)
class EndpointAgentFactory(AgentFlags):
    """The model and agent flags of `collect` and `eval`, which build the agent for an environment.
    Picklable, so Ray actors build their own model client and agent from it."""

    episode_timeout: EpisodeTimeoutOption = ENDPOINT_EPISODE_TIMEOUT
    sandbox: SandboxOption = True
    """Episodes of model-written code at scale run sandboxed unless asked otherwise."""

    def __call__(self, env: Environment) -> Agent[Any, Any]:
        from nbagent.rollout import agent_for_environment

        choice = self.model_choice()
        settings = self.agent_settings(choice)
        return agent_for_environment(env, choice.model, chosen=self.chosen(settings), **settings)


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
SplitOption = Annotated[str, typer.Option("--split", help="Split of the tasks.")]
LimitOption = Annotated[int | None, typer.Option("--limit", min=1, help="Only the first N tasks.")]
SamplesOption = Annotated[int, typer.Option("--samples", "-k", min=1, help="Episodes per task.")]
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
WorkersOption = Annotated[
    int,
    typer.Option(
        "--workers",
        min=1,
        help="Local worker processes, each with its own event loop and kernel pool (one per core past a "
        "few hundred episodes in flight).",
    ),
]
InflightOption = Annotated[
    int | None,
    typer.Option("--max-inflight-requests", min=1, help="Most model requests in flight at once (in all)."),
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


@dataclass(frozen=True)
class Episodes:
    """Which episodes to run: the tasks of an environment's split, `samples` each, `concurrency` at once."""

    env: EnvOption = "qa"
    dataset: DatasetOption = None
    env_arg: EnvArgOption = None
    split: SplitOption = "train"
    limit: LimitOption = None
    samples: SamplesOption = 1
    concurrency: ConcurrencyOption = 8

    def env_kwargs(self, judge: Judge) -> dict[str, Any]:
        """Keyword arguments of the environment's `load_environment`."""
        kwargs: dict[str, Any] = {}
        for item in self.env_arg or []:
            key, sep, raw = item.partition("=")
            if not sep or not key.strip():
                raise typer.BadParameter(f"--env-arg {item!r}: write KEY=VALUE, e.g. --env-arg search=corpus")
            try:
                kwargs[key.strip()] = json.loads(raw)
            except json.JSONDecodeError:
                kwargs[key.strip()] = raw
        if self.dataset is not None:
            kwargs["dataset"] = self.dataset
        if judge.judge_model is not None:
            kwargs["judge_model"] = judge.judge_model
            if judge.judge_base_url is not None:
                kwargs["judge_base_url"] = judge.judge_base_url
        return kwargs


@dataclass(frozen=True)
class EvalEpisodes(Episodes):
    """`eval`'s episodes: the test split by default, and samples for pass@k."""

    split: SplitOption = "test"
    samples: Annotated[int, typer.Option("--samples", "-k", min=1, help="Episodes per task (pass@k).")] = 1


@dataclass(frozen=True)
class Rollout:
    """How the episodes run: resumed or not, here, in worker processes or on Ray, with how many model
    requests in flight."""

    resume: ResumeOption = False
    ray: RayOption = None
    ray_actors: RayActorsOption = None
    workers: WorkersOption = 1
    max_inflight_requests: InflightOption = None
    tag: TagOption = None


@dataclass(frozen=True)
class Judge:
    """The LLM judge that grades answers (qa)."""

    judge_model: JudgeModelOption = None
    judge_base_url: JudgeBaseUrlOption = None


def _policy_version(value: str | None) -> int | str | None:
    """A numeric ``--policy-version`` is recorded as a number, anything else as text."""
    return int(value) if value is not None and value.isdigit() else value


@dataclass
class _Plan:
    env: Environment
    env_source: Any
    tasks: list[TaskSpec]


def _plan(episodes: Episodes, judge: Judge, elsewhere: bool) -> _Plan:
    from nbagent.environments import load_environment

    env_kwargs = episodes.env_kwargs(judge)
    env = load_environment(episodes.env, **env_kwargs)
    tasks = list(env.tasks(episodes.split))
    if not tasks:
        raise ConfigError(f"environment {env.name!r} has no tasks in split {episodes.split!r}")
    source = functools.partial(load_environment, episodes.env, **env_kwargs) if elsewhere else env
    return _Plan(env, source, tasks[: episodes.limit] if episodes.limit else tasks)


def _collect(
    factory: EndpointAgentFactory,
    episodes: Episodes,
    rollout: Rollout,
    judge: Judge,
    *,
    out: Path,
    policy_version: int | str | None,
    progress: bool,
) -> tuple[Console, _Plan, CollectSummary]:
    """Run the episodes into `out` and print the summary. A set-up error exits 1 in one line; Ctrl-C
    exits 130 with a hint to resume (finished episodes are kept)."""
    import anyio

    from nbagent.rollout import collect

    console = Console(stderr=True, highlight=False)
    samples, concurrency, ray = episodes.samples, episodes.concurrency, rollout.ray
    lock = OutputLock(out)  # refuse a second collector before loading anything; `collect` re-enters it
    try:
        check_output_file(out, "the trajectories")
        lock.acquire()
        elsewhere = ray is not None or rollout.workers > 1  # episodes run in other processes
        plan = _plan(episodes, judge, elsewhere)
        agent: Any = factory if elsewhere else factory(plan.env)
        console.print(
            Text(
                f"{plan.env.name}: {len(plan.tasks)} tasks x {samples} samples, {concurrency} at once"
                + (f" on Ray ({ray})" if ray else "")
                + (f" in {rollout.workers} worker processes" if rollout.workers > 1 else "")
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
            split=episodes.split,
            samples=samples,
            concurrency=concurrency,
            resume=rollout.resume,
            max_inflight_requests=rollout.max_inflight_requests,
            tag=rollout.tag,
            policy_version=policy_version,
            progress=progress,
            ray=ray,
            ray_actors=rollout.ray_actors,
            workers=rollout.workers,
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


@with_flag_groups
def collect_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Trajectory JSONL file to append to.")],
    *,
    episodes: Episodes,
    rollout: Rollout,
    policy_version: PolicyVersionOption = None,
    judge: Judge,
    agent: EndpointAgentFactory,
    progress: ProgressOption = True,
) -> None:
    """Run N tasks x K samples of an environment, score them, and append each episode to --out."""
    version = _policy_version(policy_version)
    _, _, summary = _collect(
        agent, episodes, rollout, judge, out=out, policy_version=version, progress=progress
    )
    if not summary.complete:
        raise typer.Exit(EXIT_ERROR)


@with_flag_groups
def eval_command(
    *,
    episodes: EvalEpisodes,
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
    rollout: Rollout,
    judge: Judge,
    agent: EndpointAgentFactory,
    progress: ProgressOption = True,
) -> None:
    """Run an environment's tasks and print the accuracy table per dataset (EM, F1, judge, pass@k)."""
    from nbagent.rollout import plan_jobs
    from nbagent.trajectory import read_trajectories
    from nbagent.trajectory.evaluation import evaluate, render_report

    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = out or Path("runs") / "eval" / f"{episodes.env.replace(':', '_')}-{stamp}.jsonl"
    target = json_out or out.with_suffix(".metrics.json")
    with one_line_errors():
        check_output_file(target, "the table")
    console, plan, _ = _collect(
        agent, episodes, rollout, judge, out=out, policy_version=None, progress=progress
    )
    planned = {job.key for job in plan_jobs(plan.env.name, plan.tasks, episodes.samples, rollout.tag)}
    trajectories = [
        t for t in read_trajectories(out, on_error="skip") if (t.group_id, t.sample_index) in planned
    ]
    report = evaluate(trajectories, success_metric=success_metric, threshold=threshold)
    render_report(report, Console(highlight=False))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
    console.print(Text(f"table: {target}; trajectories: {out}", style="dim"))
