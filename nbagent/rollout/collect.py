"""Collect scored episodes at scale: N tasks x K samples, many at once, appended as each finishes.

`collect` runs every (task, sample) pair of an environment with an agent, leasing one kernel per
episode from a `KernelPool`, scores each finished episode with the environment, and appends it to a
JSONL trajectory file through a single writer that flushes every record. Nothing is dropped: an
episode that crashes, times out or loses its model endpoint is written with that termination and the
run goes on. With ``resume=True`` the file is read first and every (group, sample) pair already in
it is skipped, so a collection killed at any moment continues without losing or repeating work.

Episodes run in this process by default, or on Ray actors (``ray="local"`` or a cluster address),
each actor holding its own kernel pool and streaming results back to the one writer here.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from nbagent.environments.base import Environment
from nbagent.errors import ConfigError, NBAgentError
from nbagent.output_files import OutputLock, check_output_file
from nbagent.trajectory import (
    ModelCall,
    ModelInfo,
    SamplingSettings,
    TaskSpec,
    Termination,
    Trajectory,
    TrajectoryWriter,
    read_trajectories,
    truncate_torn_tail,
)

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from nbagent.agent.agent import Agent, AgentRun
    from nbagent.kernel import KernelConfig, KernelPool
    from nbagent.models.base import ChatMessage, Model

__all__ = [
    "AgentFactory",
    "AgentSource",
    "BoundedModel",
    "CollectSummary",
    "EnvironmentSource",
    "EpisodeJob",
    "OutputExistsError",
    "ResumeState",
    "RolloutError",
    "agent_for_environment",
    "collect",
    "group_id_for",
    "plan_jobs",
    "prepare_output",
    "run_episode",
]

AgentFactory: TypeAlias = Callable[[Environment], "Agent[Any, Any]"]
"""Builds the agent for an environment (called once per process that runs episodes)."""
AgentSource: TypeAlias = "Agent[Any, Any] | AgentFactory"
EnvironmentSource: TypeAlias = Environment | Callable[[], Environment]
"""An environment, or a zero-argument function that builds one (what Ray actors need)."""
ResultCallback: TypeAlias = Callable[[Trajectory], Awaitable[None] | None]

FAILED_TERMINATIONS = frozenset({Termination.ERROR, Termination.TIMEOUT})
"""Terminations counted as failed episodes (the agent or its infrastructure broke, not the answer)."""


class OutputExistsError(ConfigError):
    """The output file already holds trajectories and resuming was not asked for."""


class RolloutError(NBAgentError):
    """The episode workers could not be set up (nothing was run)."""


# --------------------------------------------------------------------------------------------------
# Planning and resuming
# --------------------------------------------------------------------------------------------------


def group_id_for(environment: str, task_id: str, tag: str | None = None) -> str:
    """The stable group id of a task's samples: a hash of environment, task id and an optional tag.

    The tag separates collections that must not share groups (e.g. one per RL iteration).
    """
    key = "\x00".join([environment, task_id, tag or ""])
    return hashlib.sha256(key.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class EpisodeJob:
    """One (task, sample) pair to run."""

    task: TaskSpec
    sample_index: int
    group_id: str

    @property
    def key(self) -> tuple[str, int]:
        return (self.group_id, self.sample_index)


def plan_jobs(
    environment: str, tasks: Sequence[TaskSpec], samples: int, tag: str | None = None
) -> list[EpisodeJob]:
    """Every (task, sample) pair, task by task so that groups complete together."""
    if samples < 1:
        raise ConfigError(f"samples must be at least 1, got {samples}")
    ids = [t.id for t in tasks]
    dupes = sorted({i for i in ids if ids.count(i) > 1}) if len(set(ids)) != len(ids) else []
    if dupes:
        raise ConfigError(f"task ids must be unique; repeated: {', '.join(dupes[:5])}")
    return [
        EpisodeJob(task, k, group_id_for(environment, task.id, tag)) for task in tasks for k in range(samples)
    ]


@dataclass
class ResumeState:
    """What an existing output file already holds."""

    done: set[tuple[str, int]] = field(default_factory=set)
    """(group id, sample index) pairs already written."""
    records: int = 0
    corrupt_lines: int = 0
    """Complete lines that did not parse (left in place; readers skip them with on_error="skip")."""
    truncated_bytes: int = 0
    """Size of a torn last record (a write cut short by a kill) that was removed."""


def prepare_output(path: str | Path, *, resume: bool) -> ResumeState:
    """Check the output file and, when resuming, learn which pairs it already holds.

    A torn last record (no final newline: the process died while writing it) is truncated away, and
    its episode runs again. Complete but unparsable lines are counted and left in place. Without
    `resume`, a non-empty file raises `OutputExistsError` rather than mixing two collections.
    """
    p = Path(path)
    state = ResumeState()
    if not p.exists() or p.stat().st_size == 0:
        return state
    if not resume:
        raise OutputExistsError(
            f"{p} already holds trajectories. Pass --resume (resume=True) to continue that collection, "
            "or choose another output path."
        )
    state.truncated_bytes = truncate_torn_tail(p)
    with p.open("rb") as f:
        lines = sum(1 for line in f if line.strip())
    for traj in read_trajectories(p, on_error="skip"):
        state.records += 1
        if traj.group_id is not None:
            state.done.add((traj.group_id, traj.sample_index))
    state.corrupt_lines = lines - state.records
    return state


# --------------------------------------------------------------------------------------------------
# Protecting the endpoint
# --------------------------------------------------------------------------------------------------


class BoundedModel:
    """A `Model` that lets at most `limit` requests be in flight at once (shared by every episode)."""

    def __init__(self, model: Model, limit: int) -> None:
        if limit < 1:
            raise ConfigError(f"max_inflight_requests must be at least 1, got {limit}")
        self.inner = model
        self.limit = limit
        self._semaphore = anyio.Semaphore(limit)
        self.in_flight = 0
        self.max_in_flight = 0

    @property
    def info(self) -> ModelInfo:
        return self.inner.info

    async def complete(
        self, messages: list[ChatMessage], settings: SamplingSettings, *, prefill: str | None = None
    ) -> ModelCall:
        async with self._semaphore:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                return await self.inner.complete(messages, settings, prefill=prefill)
            finally:
                self.in_flight -= 1

    def count_tokens(self, messages: list[ChatMessage]) -> int | None:
        return self.inner.count_tokens(messages)

    async def aclose(self) -> None:
        await self.inner.aclose()


# --------------------------------------------------------------------------------------------------
# One episode
# --------------------------------------------------------------------------------------------------


def resolve_environment(env: EnvironmentSource) -> Environment:
    """The environment itself, building it first when given a factory."""
    if isinstance(env, Environment):
        return env
    built = env()
    if not isinstance(built, Environment):
        raise ConfigError(f"the environment factory returned {type(built).__name__}, not an Environment")
    return built


def resolve_agent(agent: AgentSource, env: Environment, max_inflight_requests: int | None) -> Agent[Any, Any]:
    """The agent for `env`, its model wrapped in a `BoundedModel` when a request limit is set."""
    from nbagent.agent.agent import Agent

    built = agent if isinstance(agent, Agent) else agent(env)
    if not isinstance(built, Agent):
        raise ConfigError(f"the agent factory returned {type(built).__name__}, not an nbagent Agent")
    if max_inflight_requests is None:
        return built
    return built.with_model(BoundedModel(built.model, max_inflight_requests))


async def run_episode(
    agent: Agent[Any, Any],
    env: Environment,
    job: EpisodeJob,
    pool: KernelPool,
    *,
    split: str | None = None,
    policy_version: int | str | None = None,
    hard_timeout_s: float | None = None,
) -> Trajectory:
    """Run one episode on a leased kernel and score it; never raises for the episode's own failures.

    The agent records its own ends (model errors, limits) in the trajectory. Beyond that, an exception
    from the agent or the kernel pool becomes ``termination="error"``, and passing `hard_timeout_s`
    becomes ``"timeout"``, each keeping the steps done so far and the message in ``error``. A scoring
    failure leaves ``reward`` empty and puts the message in ``metadata["score_error"]``.
    """
    started = time.time()
    agent_run: AgentRun[Any] | None = None
    failure: tuple[Termination, str] | None = None
    try:
        with anyio.move_on_after(hard_timeout_s) as deadline:
            async with pool.lease() as kernel:
                agent_run = agent.iter(job.task, kernel=kernel)
                async with agent_run:
                    async for _ in agent_run:
                        pass
        if deadline.cancelled_caught:
            failure = (Termination.TIMEOUT, f"the episode exceeded the hard limit of {hard_timeout_s} s")
    except Exception as exc:
        failure = (Termination.ERROR, f"{type(exc).__name__}: {exc}")
    result = agent_run.result if agent_run is not None else None
    if result is not None:
        traj = result.trajectory
    else:
        traj = Trajectory(task=job.task, model=agent.model.info, termination=Termination.ERROR)
    update: dict[str, Any] = {
        "environment": env.name,
        "split": split,
        "group_id": job.group_id,
        "sample_index": job.sample_index,
        "started_at": traj.started_at or started,
        "wall_s": traj.wall_s or time.time() - started,
    }
    if failure is not None:
        update["termination"], update["error"] = failure
    if policy_version is not None:
        update["model"] = traj.model.model_copy(update={"policy_version": policy_version})
    traj = traj.model_copy(update=update)
    try:
        traj.reward = await env.score(traj)
    except Exception as exc:
        traj.metadata["score_error"] = f"{type(exc).__name__}: {exc}"
    return traj


# --------------------------------------------------------------------------------------------------
# Progress and summary
# --------------------------------------------------------------------------------------------------


@dataclass
class CollectSummary:
    """What a collection did."""

    out: Path
    planned: int
    """Pairs asked for (tasks x samples)."""
    skipped: int
    """Pairs already in the file when resuming."""
    written: int = 0
    failed: int = 0
    """Written episodes that ended in error or timeout, or could not be scored."""
    reward_sum: float = 0.0
    scored: int = 0
    terminations: Counter[str] = field(default_factory=Counter)
    wall_s: float = 0.0
    truncated_bytes: int = 0
    corrupt_lines: int = 0

    @property
    def reward_mean(self) -> float | None:
        return self.reward_sum / self.scored if self.scored else None

    @property
    def episodes_per_s(self) -> float:
        return self.written / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def complete(self) -> bool:
        """True when every planned pair is now in the file."""
        return self.skipped + self.written == self.planned

    def add(self, traj: Trajectory) -> None:
        self.written += 1
        self.terminations[traj.termination.value] += 1
        if traj.termination in FAILED_TERMINATIONS or "score_error" in traj.metadata:
            self.failed += 1
        if traj.reward is not None:
            self.scored += 1
            self.reward_sum += traj.reward.total


class _ProgressView:
    """A rich progress bar of done / failed / reward mean / rate, or nothing."""

    def __init__(self, summary: CollectSummary, enabled: bool) -> None:
        self.summary = summary
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._started = time.monotonic()
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("[bold]collect"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[status]}"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
            )
            self._task = self._progress.add_task(
                "collect", total=summary.planned, completed=summary.skipped, status=self._status()
            )

    def _status(self) -> str:
        s = self.summary
        mean = "-" if s.reward_mean is None else f"{s.reward_mean:.3f}"
        rate = s.written / max(time.monotonic() - self._started, 1e-9)
        return f"failed {s.failed} · reward {mean} · {rate:.2f} ep/s"

    def update(self) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, advance=1, status=self._status())

    def __enter__(self) -> _ProgressView:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()


# --------------------------------------------------------------------------------------------------
# Executors: where episodes run
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EpisodeSettings:
    """What every episode of a collection shares, besides its agent and environment."""

    split: str | None
    policy_version: int | str | None
    hard_timeout_s: float | None
    max_inflight_requests: int | None


def kernel_config_for(env: Environment, agent: Agent[Any, Any]) -> KernelConfig | None:
    """The environment's kernel set-up when it has one (sandboxed if the agent asks for a sandbox),
    else the agent's."""
    env_config, agent_config = env.kernel_config(), agent.kernel_config
    if env_config is None:
        return agent_config
    if agent_config is not None and agent_config.sandbox and not env_config.sandbox:
        return env_config.model_copy(update={"sandbox": True, "allow_network": agent_config.allow_network})
    return env_config


def agent_for_environment(env: Environment, model: Model, **agent_kwargs: Any) -> Agent[Any, Any]:
    """An `Agent` for `env`: the environment's tools join ``agent_kwargs["tools"]`` and its
    `agent_overrides` take precedence over `agent_kwargs`."""
    from nbagent.agent.agent import Agent

    overrides = env.agent_overrides()
    tools = [*agent_kwargs.pop("tools", ()), *env.tools(), *overrides.pop("tools", ())]
    return Agent(model, tools, **{**agent_kwargs, **overrides})


def pool_size(concurrency: int, episodes: int) -> int:
    """Kernels for `concurrency` episodes at once: a quarter more (at least one more) while episodes
    remain to be run, so that a finishing episode's kernel is reset while the next one already runs
    on a clean spare instead of waiting for it (a reset takes about 0.1 s)."""
    return min(max(episodes, concurrency), concurrency + max(1, math.ceil(concurrency / 4)))


@asynccontextmanager
async def _local_pool(env: Environment, agent: Agent[Any, Any], size: int) -> AsyncIterator[KernelPool]:
    from nbagent.kernel import KernelPool

    async with KernelPool(size, kernel_config_for(env, agent), reset="lazy") as pool:
        yield pool


async def _run_local(
    env: Environment,
    agent: AgentSource,
    jobs: Sequence[EpisodeJob],
    concurrency: int,
    settings: EpisodeSettings,
    results: MemoryObjectSendStream[Trajectory],
) -> None:
    """Run `jobs` in this process, `concurrency` at a time, sending each trajectory to `results`."""
    episode_agent = resolve_agent(agent, env, settings.max_inflight_requests)
    pending: Iterator[EpisodeJob] = iter(jobs)

    async def worker(pool: KernelPool, send: MemoryObjectSendStream[Trajectory]) -> None:
        async with send:
            for job in pending:
                traj = await run_episode(
                    episode_agent,
                    env,
                    job,
                    pool,
                    split=settings.split,
                    policy_version=settings.policy_version,
                    hard_timeout_s=settings.hard_timeout_s,
                )
                await send.send(traj)

    workers = min(concurrency, len(jobs))
    size = pool_size(workers, len(jobs))
    async with results, _local_pool(env, episode_agent, size) as pool, anyio.create_task_group() as tg:
        for _ in range(workers):
            tg.start_soon(worker, pool, results.clone())


async def _write_results(
    results: MemoryObjectReceiveStream[Trajectory],
    writer: TrajectoryWriter,
    summary: CollectSummary,
    view: _ProgressView,
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
    from nbagent.agent.agent import Agent

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


# --------------------------------------------------------------------------------------------------
# The entry point
# --------------------------------------------------------------------------------------------------


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
) -> CollectSummary:
    """Run every task `samples` times, score each episode and append it to `out` as it finishes.

    Args:
        env: the environment, or a zero-argument factory of it (needed with `ray`).
        agent: an `Agent`, or a function ``env -> Agent`` (needed with `ray`: it runs in each actor).
        tasks: the tasks to run; by default ``env.tasks(split)``.
        out: the JSONL trajectory file (appended to; created with its folder when missing).
        split: recorded in each trajectory, and where `tasks` come from by default.
        samples: episodes per task (K); the K samples of a task share a group id.
        concurrency: episodes in flight at once (the total across Ray actors); the kernel pool holds
            a quarter more kernels (see `pool_size`).
        resume: skip (group, sample) pairs already in `out` instead of refusing a non-empty file.
        max_inflight_requests: most model requests in flight at once (per process; None: no limit
            beyond `concurrency`).
        tag: mixed into group ids, e.g. an RL iteration, so separate collections never share groups.
        policy_version: recorded in each trajectory's model info.
        hard_timeout_s: a last-resort wall-clock limit per episode on top of the agent's own.
        on_result: called (sync or async) with each trajectory right after it is written.
        progress: show a rich progress bar on stderr.
        ray: ``"local"`` or a Ray cluster address to run episodes on Ray actors.
        ray_actors: how many actors (default: one per 8 concurrent episodes, at least 1).

    `out` is locked for the whole collection (see `nbagent.output_files.OutputLock`): a second collector on
    the same file, resuming or not, is refused instead of writing the same pairs again.

    Returns a `CollectSummary`. Raises `OutputExistsError` for a non-empty `out` without `resume`,
    `OutputPathError` for an `out` that cannot be written, `OutputLockedError` while another process
    collects into it, `ConfigError` for bad settings; an episode's own failure is written, never raised.
    """
    if concurrency < 1:
        raise ConfigError(f"concurrency must be at least 1, got {concurrency}")
    if ray is not None and _is_agent(agent):
        raise ConfigError(
            "with Ray, pass a function that builds the agent (env -> Agent), not an Agent: each actor "
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
            with TrajectoryWriter(out) as writer, _ProgressView(summary, progress) as view, _unwrap_single():
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_write_results, receive, writer, summary, view, on_result)
                    if ray is None:
                        await _run_local(environment, agent, todo, concurrency, settings, send)
                    else:
                        from nbagent.rollout.ray import run_on_ray

                        actors = ray_actors or max(1, math.ceil(concurrency / 8))
                        await run_on_ray(
                            env, agent, todo, concurrency, settings, send, address=ray, actors=actors
                        )
            summary.wall_s = time.monotonic() - started
    return summary
