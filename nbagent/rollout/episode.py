"""One episode of a collection: the agent built for its environment, run on a leased kernel, scored.

`agent_for_environment` owns the rule of which agent settings win: the caller's defaults, then the
environment's `agent_overrides`, then what the user chose explicitly (``chosen``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import anyio

from nbagent.environments import Environment
from nbagent.errors import ConfigError
from nbagent.models.bounded import BoundedModel
from nbagent.rollout.plan import EpisodeJob
from nbagent.trajectory import Termination, Trajectory

if TYPE_CHECKING:
    from nbagent.agent import Agent, AgentRun
    from nbagent.kernel import KernelConfig, KernelPool
    from nbagent.models.base import Model

AgentFactory: TypeAlias = Callable[[Environment], "Agent[Any, Any]"]
"""Builds the agent for an environment (called once per process that runs episodes)."""
AgentSource: TypeAlias = "Agent[Any, Any] | AgentFactory"
EnvironmentSource: TypeAlias = Environment | Callable[[], Environment]
"""An environment, or a zero-argument function that builds one (what Ray actors need)."""
ResultCallback: TypeAlias = Callable[[Trajectory], Awaitable[None] | None]

FAILED_TERMINATIONS = frozenset({Termination.ERROR, Termination.TIMEOUT})
"""Terminations counted as failed episodes (the agent or its infrastructure broke, not the answer)."""


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
    from nbagent.agent import Agent

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


def agent_for_environment(
    env: Environment, model: Model, *, chosen: Mapping[str, Any] | None = None, **defaults: Any
) -> Agent[Any, Any]:
    """An `Agent` for `env`. Settings: `defaults`, then the environment's `agent_overrides`, then
    `chosen` (what the user set explicitly). Tools add up: ``defaults["tools"]``, the environment's
    tools, its overrides' tools, then ``chosen["tools"]``."""
    from nbagent.agent import Agent

    layers = [dict(defaults), env.agent_overrides(), dict(chosen or {})]
    base, wished, set_by_user = layers
    tools = [*base.pop("tools", ()), *env.tools(), *wished.pop("tools", ()), *set_by_user.pop("tools", ())]
    return Agent(model, tools, **{**base, **wished, **set_by_user})
