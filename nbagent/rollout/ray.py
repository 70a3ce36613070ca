"""Run a collection's episodes on Ray actors; results stream back to the driver's single writer.

Each actor builds the environment and the agent once (from the factories `collect` was given, shipped
by Ray's pickling), holds its own `KernelPool`, and answers ``run(job)`` with the finished, scored
trajectory as JSON. The driver keeps a fixed number of episodes in flight per actor, pulling jobs from
one shared queue, so a fast actor takes more work. An actor that dies is restarted by Ray (twice at
most); the episodes it was running go back to the queue and run again, elsewhere if need be, and are
written as ``termination="error"`` only if their actor dies again. Jobs left when every actor is gone
for good stay unrun (`CollectSummary.complete` is false) for a later resume.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from nbagent.errors import ConfigError
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
from nbagent.rollout.plan import EpisodeJob, RolloutError
from nbagent.trajectory import ModelInfo, Termination, Trajectory

if TYPE_CHECKING:
    from nbagent.kernel import KernelPool

__all__ = ["ACTOR_DEATH_RETRIES", "EpisodeWorker", "run_on_ray"]

ACTOR_DEATH_RETRIES = 1
"""Times an episode whose actor died under it is run again (elsewhere) before it is written as an error."""


class EpisodeWorker:
    """The Ray actor: one environment, one agent, one kernel pool of `pool_size` kernels."""

    def __init__(
        self, env: EnvironmentSource, agent: AgentSource, pool_size: int, settings: EpisodeSettings
    ) -> None:
        self.env = resolve_environment(env)
        self.agent = resolve_agent(agent, self.env, settings.max_inflight_requests)
        self.settings = settings
        self.pool_size = pool_size
        self._pool: KernelPool | None = None
        self._lock = anyio.Lock()
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        """Recorded as ``metadata["worker"]`` of each trajectory this actor ran."""

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

    async def run(self, job: EpisodeJob) -> str:
        """Run and score one episode; the trajectory as a JSON string."""
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
        return traj.model_dump_json()

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None


def _lost_episode(job: EpisodeJob, settings: EpisodeSettings, env_name: str, error: str) -> Trajectory:
    """The record of an episode whose actor failed before returning it."""
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


async def _alive(handle: Any, wait_s: float = 300.0) -> bool:
    """Whether an actor answers, waiting up to `wait_s` while Ray restarts it."""
    from ray.exceptions import ActorUnavailableError

    with anyio.move_on_after(wait_s):
        while True:
            try:
                await handle.ready.remote()
            except ActorUnavailableError:  # restarting: ask again
                await anyio.sleep(1.0)
            except Exception:  # dead for good, or its restart failed
                return False
            else:
                return True
    return False


def _connect(address: str) -> bool:
    """Join (or start, for ``"local"``) a Ray cluster unless already connected; True when we connected."""
    import ray

    if ray.is_initialized():
        return False
    ray.init(address=None if address == "local" else address, ignore_reinit_error=True, log_to_driver=False)
    return True


async def run_on_ray(
    env: EnvironmentSource,
    agent: AgentSource,
    jobs: Sequence[EpisodeJob],
    concurrency: int,
    settings: EpisodeSettings,
    results: MemoryObjectSendStream[Trajectory],
    *,
    address: str,
    actors: int,
) -> None:
    """Run `jobs` on `actors` Ray actors, `concurrency` episodes in flight in all, sending each
    trajectory to `results` (the driver's writer)."""
    try:
        import ray
        from ray.exceptions import RayActorError
    except ImportError as exc:
        raise ConfigError("Ray is not installed; install the extra: pip install 'nbagent[ray]'") from exc
    env_name = resolve_environment(env).name
    actors = max(1, min(actors, len(jobs)))
    per_actor = max(1, math.ceil(concurrency / actors))
    kernels = pool_size(per_actor, math.ceil(len(jobs) / actors))
    connected_here = _connect(address)
    worker_cls: Any = ray.remote(EpisodeWorker)
    handles = [
        worker_cls.options(
            num_cpus=1, max_restarts=2, max_concurrency=per_actor + 1, scheduling_strategy="SPREAD"
        ).remote(env, agent, kernels, settings)
        for _ in range(actors)
    ]
    try:
        for handle in handles:
            await handle.ready.remote()
    except Exception as exc:
        for handle in handles:
            ray.kill(handle)
        if connected_here:
            ray.shutdown()
        raise RolloutError(f"the Ray episode workers could not start: {exc}") from exc
    queue: deque[tuple[EpisodeJob, int]] = deque((job, 0) for job in jobs)

    async def drive(handle: Any, send: MemoryObjectSendStream[Trajectory]) -> None:
        async with send:
            while queue:
                job, retries = queue.popleft()
                try:
                    traj = Trajectory.model_validate_json(await handle.run.remote(job))
                except RayActorError as exc:  # the actor died under this episode (and maybe others)
                    if retries < ACTOR_DEATH_RETRIES:
                        queue.append((job, retries + 1))
                    else:
                        await send.send(_lost_episode(job, settings, env_name, f"Ray: {exc}"))
                    if not await _alive(handle):
                        return  # its remaining work goes to the other actors
                    continue
                except Exception as exc:  # not an episode's own failure (those come back as records)
                    traj = _lost_episode(job, settings, env_name, f"Ray: {type(exc).__name__}: {exc}")
                await send.send(traj)

    try:
        async with results, anyio.create_task_group() as tg:
            for handle in handles:
                for _ in range(per_actor):
                    tg.start_soon(drive, handle, results.clone())
    finally:
        with anyio.CancelScope(shield=True):
            for handle in handles:
                with contextlib.suppress(Exception):  # an actor already gone has nothing to close
                    await handle.close.remote()
                ray.kill(handle)
        if connected_here:
            ray.shutdown()
