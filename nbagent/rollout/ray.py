"""Run a collection's episodes on Ray actors; results stream back to the driver's single writer.

Each actor is an `EpisodeWorker`: it builds the environment and the agent once (from the factories
`collect` was given, shipped by Ray's pickling), holds its own `KernelPool`, and answers
``run_json(job)`` with the finished, scored trajectory as JSON. Jobs are spread by
`nbagent.rollout.dispatch`; an actor that dies is restarted by Ray (twice at most) and its episodes
run again elsewhere (see there).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from nbagent.errors import ConfigError
from nbagent.rollout.dispatch import (
    EpisodeWorker,
    WorkerLost,
    dispatch,
    per_worker_settings,
    share_out,
)
from nbagent.rollout.episode import AgentSource, EnvironmentSource, EpisodeSettings, resolve_environment
from nbagent.rollout.plan import EpisodeJob, RolloutError
from nbagent.trajectory import Trajectory

__all__ = ["RayEpisodeWorker", "run_on_ray"]


class RayEpisodeWorker(EpisodeWorker):
    """The Ray actor: an `EpisodeWorker` that answers with the trajectory as JSON."""

    async def run_json(self, job: EpisodeJob) -> str:
        return (await self.run(job)).model_dump_json()


class _ActorRunner:
    """An actor as the dispatcher sees it."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    async def run(self, job: EpisodeJob) -> Trajectory:
        from ray.exceptions import RayActorError

        try:
            return Trajectory.model_validate_json(await self.handle.run_json.remote(job))
        except RayActorError as exc:  # the actor died under this episode (and maybe others)
            raise WorkerLost(f"Ray: {exc}") from exc

    async def revive(self) -> bool:
        return await _alive(self.handle)


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
    except ImportError as exc:
        raise ConfigError("Ray is not installed; install the extra: pip install 'nbagent[ray]'") from exc
    env_name = resolve_environment(env).name
    actors, per_actor, kernels = share_out(concurrency, len(jobs), actors)
    connected_here = _connect(address)
    worker_cls: Any = ray.remote(RayEpisodeWorker)
    handles = [
        worker_cls.options(
            num_cpus=1, max_restarts=2, max_concurrency=per_actor + 1, scheduling_strategy="SPREAD"
        ).remote(env, agent, kernels, per_worker_settings(settings, actors))
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
    try:
        runners = [_ActorRunner(handle) for handle in handles]
        await dispatch(runners, per_actor, jobs, settings, env_name, results)
    finally:
        with anyio.CancelScope(shield=True):
            for handle in handles:
                with contextlib.suppress(Exception):  # an actor already gone has nothing to close
                    await handle.close.remote()
                ray.kill(handle)
        if connected_here:
            ray.shutdown()
