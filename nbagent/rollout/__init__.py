"""Rollouts: many scored episodes of an environment, on local kernels or Ray actors, to one file."""

from nbagent.rollout.collect import collect
from nbagent.rollout.episode import (
    FAILED_TERMINATIONS,
    AgentFactory,
    AgentSource,
    EnvironmentSource,
    EpisodeSettings,
    ResultCallback,
    agent_for_environment,
    kernel_config_for,
    resolve_agent,
    resolve_environment,
    run_episode,
)
from nbagent.rollout.local import (
    pool_size,
)
from nbagent.rollout.plan import (
    EpisodeJob,
    OutputExistsError,
    ResumeState,
    RolloutError,
    group_id_for,
    plan_jobs,
    prepare_output,
)
from nbagent.rollout.progress import (
    CollectSummary,
)

__all__ = [
    "FAILED_TERMINATIONS",
    "AgentFactory",
    "AgentSource",
    "CollectSummary",
    "EnvironmentSource",
    "EpisodeJob",
    "EpisodeSettings",
    "OutputExistsError",
    "ResultCallback",
    "ResumeState",
    "RolloutError",
    "agent_for_environment",
    "collect",
    "group_id_for",
    "kernel_config_for",
    "plan_jobs",
    "pool_size",
    "prepare_output",
    "resolve_agent",
    "resolve_environment",
    "run_episode",
]
