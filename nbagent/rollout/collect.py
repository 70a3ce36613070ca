"""Collect scored episodes at scale: N tasks x K samples, many at once, appended as each finishes.

`collect` runs every (task, sample) pair of an environment with an agent, leasing one kernel per
episode from a `KernelPool`, scores each finished episode with the environment, and appends it to a
JSONL trajectory file through a single writer that flushes every record. Nothing is dropped: an
episode that crashes, times out or loses its model endpoint is written with that termination and the
run goes on. With ``resume=True`` the file is read first and every (group, sample) pair already in
it is skipped, so a collection killed at any moment continues without losing or repeating work.

Episodes run in this process by default, in several local worker processes (``workers=N``), or on
Ray actors (``ray="local"`` or a cluster address); each worker holds its own kernel pool and streams
results back to the one writer here.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from nbagent.errors import ConfigError
from nbagent.output_files import OutputLock, check_output_file
from nbagent.rollout.episode import (
    AgentSource,
    EnvironmentSource,
    EpisodeSettings,
    ResultCallback,
    resolve_environment,
)
from nbagent.rollout.local import run_local
from nbagent.rollout.plan import plan_jobs, prepare_output
from nbagent.rollout.progress import CollectSummary, ProgressView
from nbagent.trajectory import TaskSpec, Trajectory, TrajectoryWriter


async def _write_results(
    results: MemoryObjectReceiveStream[Trajectory],
    writer: TrajectoryWriter,
    summary: CollectSummary,
    view: ProgressView,
    on_result: ResultCallback | None,
) -> None:
    """The single writer: append and flush each trajectory as it arrives, then report it."""
    async with results:
        async for traj in results:
            writer.write(traj)
            summary.add(traj)
            view.update()
            if on_result is not None:
                outcome = on_result(traj)
                if inspect.isawaitable(outcome):
                    await outcome


def _is_agent(obj: object) -> bool:
    from nbagent.agent import Agent

    return isinstance(obj, Agent)


@contextmanager
def _unwrap_single() -> Iterator[None]:
    """Re-raise a task group's only error as itself, so callers catch e.g. `KernelError` directly."""
    try:
        yield
    except BaseExceptionGroup as group:
        leaves: list[BaseException] = []
        pending: list[BaseException] = [group]
        while pending:
            exc = pending.pop()
            if isinstance(exc, BaseExceptionGroup):
                pending.extend(exc.exceptions)
            else:
                leaves.append(exc)
        if len(leaves) == 1:
            raise leaves[0] from None
        raise


async def collect(
    env: EnvironmentSource,
    agent: AgentSource,
    tasks: Sequence[TaskSpec] | None = None,
    *,
    out: str | Path,
    split: str = "train",
    samples: int = 1,
    concurrency: int = 8,
    resume: bool = False,
    max_inflight_requests: int | None = None,
    tag: str | None = None,
    policy_version: int | str | None = None,
    hard_timeout_s: float | None = None,
    on_result: ResultCallback | None = None,
    progress: bool = False,
    ray: str | None = None,
    ray_actors: int | None = None,
    workers: int = 1,
) -> CollectSummary:
    """Run every task `samples` times, score each episode and append it to `out` as it finishes.

    Args:
        env: the environment, or a zero-argument factory of it (needed with `ray` or `workers`).
        agent: an `Agent`, or a function ``env -> Agent`` (needed with `ray` or `workers`: it runs in
            each worker; both must pickle, e.g. module-level functions or `functools.partial` of them).
        tasks: the tasks to run; by default ``env.tasks(split)``.
        out: the JSONL trajectory file (appended to; created with its folder when missing).
        split: recorded in each trajectory, and where `tasks` come from by default.
        samples: episodes per task (K); the K samples of a task share a group id.
        concurrency: episodes in flight at once (the total across workers), each on a kernel of its
            own (see `pool_size`).
        resume: skip (group, sample) pairs already in `out` instead of refusing a non-empty file.
        max_inflight_requests: most model requests in flight at once (the total, split evenly across
            workers; None: no limit beyond `concurrency`).
        tag: mixed into group ids, e.g. an RL iteration, so separate collections never share groups.
        policy_version: recorded in each trajectory's model info.
        hard_timeout_s: a last-resort wall-clock limit per episode on top of the agent's own.
        on_result: called (sync or async) with each trajectory right after it is written.
        progress: show a rich progress bar on stderr.
        ray: ``"local"`` or a Ray cluster address to run episodes on Ray actors.
        ray_actors: how many actors (default: one per 8 concurrent episodes, at least 1).
        workers: local worker processes, each with its own event loop and kernel pool (1: this
            process); past a few hundred episodes in flight, one per core.

    `out` is locked for the whole collection (see `nbagent.output_files.OutputLock`): a second collector on
    the same file, resuming or not, is refused instead of writing the same pairs again.

    Returns a `CollectSummary`. Raises `OutputExistsError` for a non-empty `out` without `resume`,
    `OutputPathError` for an `out` that cannot be written, `OutputLockedError` while another process
    collects into it, `ConfigError` for bad settings; an episode's own failure is written, never raised.
    """
    if concurrency < 1:
        raise ConfigError(f"concurrency must be at least 1, got {concurrency}")
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    if ray is not None and workers > 1:
        raise ConfigError("choose Ray actors (ray_actors) or local worker processes (workers), not both")
    if (ray is not None or workers > 1) and _is_agent(agent):
        where = "with Ray" if ray is not None else "with worker processes"
        raise ConfigError(
            f"{where}, pass a function that builds the agent (env -> Agent), not an Agent: each worker "
            "builds its own agent and model client"
        )
    environment = resolve_environment(env)
    task_list = list(environment.tasks(split) if tasks is None else tasks)
    jobs = plan_jobs(environment.name, task_list, samples, tag)
    with OutputLock(check_output_file(out, "the trajectories")):
        state = prepare_output(out, resume=resume)
        todo = [job for job in jobs if job.key not in state.done]
        summary = CollectSummary(
            out=Path(out),
            planned=len(jobs),
            skipped=len(jobs) - len(todo),
            truncated_bytes=state.truncated_bytes,
            corrupt_lines=state.corrupt_lines,
        )
        settings = EpisodeSettings(split, policy_version, hard_timeout_s, max_inflight_requests)
        started = time.monotonic()
        if todo:
            send, receive = anyio.create_memory_object_stream[Trajectory](0)
            with TrajectoryWriter(out) as writer, ProgressView(summary, progress) as view, _unwrap_single():
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_write_results, receive, writer, summary, view, on_result)
                    if ray is None and workers == 1:
                        await run_local(environment, agent, todo, concurrency, settings, send)
                    elif ray is None:
                        from nbagent.rollout.processes import run_in_processes

                        await run_in_processes(env, agent, todo, concurrency, settings, send, workers=workers)
                    else:
                        from nbagent.rollout.ray import run_on_ray

                        actors = ray_actors or max(1, math.ceil(concurrency / 8))
                        await run_on_ray(
                            env, agent, todo, concurrency, settings, send, address=ray, actors=actors
                        )
            summary.wall_s = time.monotonic() - started
    return summary
