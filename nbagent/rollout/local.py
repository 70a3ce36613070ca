"""Running a collection's episodes in this process: one kernel pool, `concurrency` workers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from nbagent.environments import Environment
from nbagent.rollout.episode import (
    AgentSource,
    EpisodeSettings,
    kernel_config_for,
    resolve_agent,
    run_episode,
)
from nbagent.rollout.plan import EpisodeJob
from nbagent.trajectory import Trajectory

if TYPE_CHECKING:
    from nbagent.agent import Agent
    from nbagent.kernel import KernelConfig, KernelPool


def pool_size(concurrency: int, episodes: int) -> int:
    """Kernels for `concurrency` episodes at once: one each. A finished episode's kernel is lent again
    at once, its clean-up deferred into the next episode's set-up cell (``reset="lazy"``)."""
    return max(1, min(concurrency, episodes))


def episode_pool(config: KernelConfig | None, size: int) -> KernelPool:
    """The kernel pool of a collection: `size` kernels, forked from a template where bubblewrap works
    (they start in milliseconds and share memory, and the template holds the agent's kernel-side
    modules: a first episode on a kernel costs no more than the next), reset lazily between episodes."""
    from nbagent.agent.kernel_side import kernel_modules
    from nbagent.kernel import KernelConfig, KernelPool
    from nbagent.kernel.forked import fork_unavailable
    from nbagent.kernel.pool import StartMode

    config = config or KernelConfig()
    start: StartMode = "fork" if fork_unavailable(config) is None else "launch"
    return KernelPool(size, config, reset="lazy", start=start, modules=kernel_modules())


@asynccontextmanager
async def local_pool(env: Environment, agent: Agent[Any, Any], size: int) -> AsyncIterator[KernelPool]:
    async with episode_pool(kernel_config_for(env, agent), size) as pool:
        yield pool


async def run_local(
    env: Environment,
    agent: AgentSource,
    jobs: Sequence[EpisodeJob],
    concurrency: int,
    settings: EpisodeSettings,
    results: MemoryObjectSendStream[Trajectory],
) -> None:
    """Run `jobs` in this process, `concurrency` at a time, sending each trajectory to `results`."""
    from nbagent.agent import Agent

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
    try:
        async with results, local_pool(env, episode_agent, size) as pool, anyio.create_task_group() as tg:
            for _ in range(workers):
                tg.start_soon(worker, pool, results.clone())
    finally:
        if not isinstance(agent, Agent):  # built here by the factory: its model client is ours to close
            with anyio.CancelScope(shield=True):
                await episode_agent.model.aclose()
