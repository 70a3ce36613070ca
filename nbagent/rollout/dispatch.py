"""Spreading a collection's episodes over worker processes (local ones or Ray actors).

One rule for both: each worker keeps a fixed number of episodes in flight, pulling jobs from one shared
queue, so a fast worker takes more work. A worker that dies under an episode is revived (each kind of
worker says how, and how often); the episodes it was running go back to the queue and run again,
elsewhere if need be, and are written as ``termination="error"`` only if their worker dies again. Jobs
left when every worker is gone for good stay unrun (`CollectSummary.complete` is false) for a later
resume.
"""

from __future__ import annotations

import dataclasses
import math
import os
import socket
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from nbagent.rollout.episode import (
    AgentSource,
    EnvironmentSource,
    EpisodeSettings,
    kernel_config_for,
    resolve_agent,
    resolve_environment,
    run_episode,
)
from nbagent.rollout.local import episode_pool, pool_size
from nbagent.rollout.plan import EpisodeJob
from nbagent.trajectory import ModelInfo, Termination, Trajectory

if TYPE_CHECKING:
    from nbagent.kernel import KernelPool

__all__ = [
    "DEATH_RETRIES",
    "EpisodeRunner",
    "WorkerLost",
    "dispatch",
    "lost_episode",
    "per_worker_settings",
    "share_out",
    "worker_name",
]

DEATH_RETRIES = 1
"""Times an episode whose worker died under it is run again (elsewhere) before it is written as an error."""


class WorkerLost(Exception):
    """The worker running an episode died before returning it."""


class EpisodeRunner(Protocol):
    """One worker, as the dispatcher sees it."""

    async def run(self, job: EpisodeJob) -> Trajectory:
        """Run and score one episode; raises `WorkerLost` when the worker dies under it."""
        ...

    async def revive(self) -> bool:
        """Wait until the worker serves again after a death; False when it is gone for good."""
        ...


class EpisodeWorker:
    """What runs episodes in a worker process (local or a Ray actor): one environment, one agent, one
    kernel pool of `pool_size` kernels, built in that process from the factories it was sent."""

    def __init__(
        self, env: EnvironmentSource, agent: AgentSource, pool_size: int, settings: EpisodeSettings
    ) -> None:
        self.env = resolve_environment(env)
        self.agent = resolve_agent(agent, self.env, settings.max_inflight_requests)
        self.settings = settings
        self.pool_size = pool_size
        self._pool: KernelPool | None = None
        self._lock = anyio.Lock()
        self.name = worker_name()

    async def _ensure_pool(self) -> KernelPool:
        async with self._lock:
            if self._pool is None:
                pool = episode_pool(kernel_config_for(self.env, self.agent), self.pool_size)
                await pool.start()
                self._pool = pool
            return self._pool

    async def ready(self) -> None:
        """Start the kernel pool; raises here, before any episode, when the set-up is broken."""
        await self._ensure_pool()

    async def run(self, job: EpisodeJob) -> Trajectory:
        """Run and score one episode, recording this worker in its metadata."""
        pool = await self._ensure_pool()
        traj = await run_episode(
            self.agent,
            self.env,
            job,
            pool,
            split=self.settings.split,
            policy_version=self.settings.policy_version,
            hard_timeout_s=self.settings.hard_timeout_s,
        )
        traj.metadata["worker"] = self.name
        return traj

    async def close(self) -> None:
        """Kill the kernels and close the model client (built here, by the factory)."""
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None
        await self.agent.model.aclose()


def worker_name() -> str:
    """This process as ``host:pid``, recorded as ``metadata["worker"]`` of each trajectory it ran."""
    return f"{socket.gethostname()}:{os.getpid()}"


def share_out(concurrency: int, jobs: int, workers: int) -> tuple[int, int, int]:
    """Workers to use (no more than jobs), episodes in flight on each, and kernels in each one's pool."""
    workers = max(1, min(workers, jobs))
    per_worker = max(1, math.ceil(concurrency / workers))
    return workers, per_worker, pool_size(per_worker, math.ceil(jobs / workers))


def per_worker_settings(settings: EpisodeSettings, workers: int) -> EpisodeSettings:
    """Each worker's share of the collection's limits: `max_inflight_requests` is the total over all."""
    limit = settings.max_inflight_requests
    if limit is None:
        return settings
    return dataclasses.replace(settings, max_inflight_requests=max(1, math.ceil(limit / workers)))


def lost_episode(job: EpisodeJob, settings: EpisodeSettings, env_name: str, error: str) -> Trajectory:
    """The record of an episode whose worker failed before returning it."""
    return Trajectory(
        task=job.task,
        environment=env_name,
        split=settings.split,
        group_id=job.group_id,
        sample_index=job.sample_index,
        model=ModelInfo(provider="unknown", model="unknown", policy_version=settings.policy_version),
        termination=Termination.ERROR,
        error=error,
    )


async def dispatch(
    runners: Sequence[EpisodeRunner],
    per_runner: int,
    jobs: Sequence[EpisodeJob],
    settings: EpisodeSettings,
    env_name: str,
    results: MemoryObjectSendStream[Trajectory],
) -> None:
    """Run `jobs` on `runners`, `per_runner` episodes in flight on each, sending every trajectory to
    `results`; a failure that is not the episode's own (those come back as records) is written as an
    error record of that episode."""
    queue: deque[tuple[EpisodeJob, int]] = deque((job, 0) for job in jobs)

    async def drive(runner: EpisodeRunner, send: MemoryObjectSendStream[Trajectory]) -> None:
        async with send:
            while queue:
                job, retries = queue.popleft()
                try:
                    traj = await runner.run(job)
                except WorkerLost as exc:
                    if retries < DEATH_RETRIES:
                        queue.append((job, retries + 1))
                    else:
                        await send.send(lost_episode(job, settings, env_name, str(exc)))
                    if not await runner.revive():
                        return  # its remaining work goes to the other workers
                    continue
                except Exception as exc:
                    traj = lost_episode(job, settings, env_name, f"{type(exc).__name__}: {exc}")
                await send.send(traj)

    async with results, anyio.create_task_group() as tg:
        for runner in runners:
            for _ in range(per_runner):
                tg.start_soon(drive, runner, results.clone())
