"""Environments: tasks with verifiable rewards (`base`), found by name (`registry`), split (`splits`)
and scored (`rewards`)."""

from nbagent.environments.base import (
    AnswerCheck,
    BaseEnvironment,
    Environment,
    EnvironmentOptions,
    SimpleEnvironment,
    Task,
)
from nbagent.environments.registry import (
    ENTRY_POINT_GROUP,
    EnvironmentFactory,
    EnvironmentNotFoundError,
    available_environments,
    load_environment,
    register_environment,
)
from nbagent.environments.rewards import (
    ANSWER_ONLY,
    AnswerScore,
    RewardWeights,
    code_execution_score,
    combine_reward,
    format_score,
)
from nbagent.environments.splits import (
    DEFAULT_SPLITS,
    UnknownSplitError,
    assign_split,
    check_splits,
    normalize_key,
    split_tasks,
)

__all__ = [
    "ANSWER_ONLY",
    "DEFAULT_SPLITS",
    "ENTRY_POINT_GROUP",
    "AnswerCheck",
    "AnswerScore",
    "BaseEnvironment",
    "Environment",
    "EnvironmentFactory",
    "EnvironmentNotFoundError",
    "EnvironmentOptions",
    "RewardWeights",
    "SimpleEnvironment",
    "Task",
    "UnknownSplitError",
    "assign_split",
    "available_environments",
    "check_splits",
    "code_execution_score",
    "combine_reward",
    "format_score",
    "load_environment",
    "normalize_key",
    "register_environment",
    "split_tasks",
]
