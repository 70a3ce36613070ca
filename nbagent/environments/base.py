"""Environments: tasks with verifiable rewards, the tools an episode gets, and how to score it.

An environment is anything that satisfies the `Environment` protocol. Environments are found by name
through `load_environment`, which looks in the in-process registry (`register_environment`), then in
the ``nbagent.environments`` entry points of installed packages, then treats the name as an importable
module with a ``load_environment`` function. `BaseEnvironment` and `SimpleEnvironment` make a new
environment a few lines; `format_score` and `code_execution_score` are L0's trajectory-level reward
parts, usable by any environment.

This module stays light: it imports pydantic (through the trajectory contract) and the standard library.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import re
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, TypedDict, Unpack, overload, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from nbagent.errors import ConfigError
from nbagent.trajectory import CellStatus, Reward, TaskSpec, Trajectory

if TYPE_CHECKING:
    from nbagent.kernel import KernelConfig
    from nbagent.tools import Tool

__all__ = [
    "ANSWER_ONLY",
    "DEFAULT_SPLITS",
    "ENTRY_POINT_GROUP",
    "AnswerScore",
    "BaseEnvironment",
    "Environment",
    "EnvironmentNotFoundError",
    "EnvironmentOptions",
    "RewardWeights",
    "SimpleEnvironment",
    "Task",
    "UnknownSplitError",
    "assign_split",
    "available_environments",
    "code_execution_score",
    "combine_reward",
    "format_score",
    "load_environment",
    "register_environment",
    "split_tasks",
]

Task: TypeAlias = TaskSpec
"""A task is the trajectory contract's `TaskSpec`: id, prompt, references, metadata."""

ENTRY_POINT_GROUP = "nbagent.environments"

DEFAULT_SPLITS: Mapping[str, float] = {"train": 0.8, "dev": 0.1, "test": 0.1}
"""L0's 80/10/10 re-split. The pseudo-split ``"all"`` always means every task."""


# --------------------------------------------------------------------------------------------------
# The protocol
# --------------------------------------------------------------------------------------------------


@runtime_checkable
class Environment(Protocol):
    """Tasks with a verifiable reward, and what an episode needs to attempt them."""

    name: str

    def tasks(self, split: str) -> Sequence[TaskSpec]:
        """The tasks of one split (``"train"``, ``"dev"``, ``"test"`` or ``"all"``)."""
        ...

    def tools(self) -> list[Tool]:
        """Host tools an episode's kernel code may call."""
        ...

    def kernel_config(self) -> KernelConfig | None:
        """Kernel set-up for an episode, or None for the agent's default."""
        ...

    def agent_overrides(self) -> dict[str, Any]:
        """Keyword arguments for `Agent` that this environment wants (e.g. ``max_steps``)."""
        ...

    async def score(self, trajectory: Trajectory) -> Reward:
        """The reward of a finished episode: a total and a named breakdown."""
        ...


class EnvironmentNotFoundError(ConfigError):
    """No environment is known under the requested name."""


class UnknownSplitError(ConfigError):
    """An environment was asked for a split it does not have."""


# --------------------------------------------------------------------------------------------------
# Registry and discovery
# --------------------------------------------------------------------------------------------------

EnvironmentFactory: TypeAlias = Callable[..., Environment]

_REGISTRY: dict[str, EnvironmentFactory] = {}


@overload
def register_environment(
    name: str, factory: EnvironmentFactory, *, replace: bool = False
) -> EnvironmentFactory: ...


@overload
def register_environment(
    name: str, factory: None = None, *, replace: bool = False
) -> Callable[[EnvironmentFactory], EnvironmentFactory]: ...


def register_environment(
    name: str, factory: EnvironmentFactory | None = None, *, replace: bool = False
) -> EnvironmentFactory | Callable[[EnvironmentFactory], EnvironmentFactory]:
    """Register `factory` (called with the keyword arguments of `load_environment`) under `name`.

    Use it directly, ``register_environment("mine", make_mine)``, or as a decorator,
    ``@register_environment("mine")``. Registering a taken name raises `ConfigError` unless ``replace``.
    """

    def add(fn: EnvironmentFactory) -> EnvironmentFactory:
        if not replace and name in _REGISTRY and _REGISTRY[name] is not fn:
            raise ConfigError(
                f"an environment named {name!r} is already registered; pass replace=True to override it"
            )
        _REGISTRY[name] = fn
        return fn

    if factory is None:
        return add
    return add(factory)


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def available_environments() -> list[str]:
    """Names `load_environment` knows: registered ones and installed entry points."""
    return sorted(set(_REGISTRY) | set(_entry_points()))


def _factory_for(name: str) -> EnvironmentFactory:
    if name in _REGISTRY:
        return _REGISTRY[name]
    entry_points = _entry_points()
    if name in entry_points:
        loaded: EnvironmentFactory = entry_points[name].load()
        return loaded
    module_name, _, attr = name.partition(":")
    explicit = "." in name or ":" in name
    if re.fullmatch(r"[A-Za-z_][\w.]*(:[A-Za-z_]\w*)?", name) and (
        explicit or importlib.util.find_spec(module_name) is not None
    ):
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise EnvironmentNotFoundError(
                f"environment {name!r}: cannot import module {module_name!r} ({exc})"
            ) from exc
        fn = getattr(module, attr or "load_environment", None)
        if not callable(fn):
            raise EnvironmentNotFoundError(
                f"environment {name!r}: module {module_name!r} has no callable {attr or 'load_environment'!r}"
            )
        return fn  # type: ignore[no-any-return]
    known = ", ".join(available_environments()) or "(none)"
    raise EnvironmentNotFoundError(
        f"unknown environment {name!r}. Available: {known}. Register one with "
        f"nbagent.environments.base.register_environment, install a package with an entry point in the "
        f"{ENTRY_POINT_GROUP!r} group, or pass 'module.path' (or 'module.path:function') of a "
        "module with a load_environment function."
    )


def load_environment(name: str, **kwargs: Any) -> Environment:
    """Build the environment called `name` with `kwargs`.

    Looks in the registry, then the ``nbagent.environments`` entry points, then imports `name` as
    ``module.path`` or ``module.path:function``. Raises `EnvironmentNotFoundError` listing what exists.
    """
    env = _factory_for(name)(**kwargs)
    if not isinstance(env, Environment):
        raise ConfigError(
            f"environment factory for {name!r} returned {type(env).__name__}, which lacks the Environment "
            "interface (name, tasks, tools, kernel_config, agent_overrides, async score)"
        )
    return env


# --------------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------------


def _normalize_key(text: str) -> str:
    return " ".join(text.lower().split())


def assign_split(key: str, splits: Mapping[str, float] = DEFAULT_SPLITS, *, seed: str = "nbagent") -> str:
    """The split a task with split key `key` belongs to: a pure function of (seed, key).

    The key is hashed (SHA-256) to a number in [0, 1) that falls into one of the cumulative split
    fractions, so every key lands in exactly one split and splits are disjoint by construction.
    """
    _check_splits(splits)
    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2.0**64 * sum(splits.values())
    cumulative = 0.0
    for name, fraction in splits.items():
        cumulative += fraction
        if point < cumulative:
            return name
    return next(reversed(list(splits)))


def _check_splits(splits: Mapping[str, float]) -> None:
    if not splits or any(f < 0 for f in splits.values()) or sum(splits.values()) <= 0:
        raise ConfigError(f"split fractions must be non-negative and not all zero, got {dict(splits)}")
    if "all" in splits:
        raise ConfigError("'all' is reserved for every task; choose another split name")


def split_tasks(
    tasks: Iterable[TaskSpec],
    splits: Mapping[str, float] = DEFAULT_SPLITS,
    *,
    key: Callable[[TaskSpec], str] | None = None,
    seed: str = "nbagent",
) -> dict[str, list[TaskSpec]]:
    """Partition `tasks` with `assign_split`. `key` defaults to the normalized prompt text, so the same
    question under two ids always lands in the same split."""
    key_of = key or (lambda t: _normalize_key(t.prompt))
    out: dict[str, list[TaskSpec]] = {name: [] for name in splits}
    for task in tasks:
        out[assign_split(key_of(task), splits, seed=seed)].append(task)
    return out


# --------------------------------------------------------------------------------------------------
# Reward parts shared by environments
# --------------------------------------------------------------------------------------------------


class RewardWeights(BaseModel):
    """Weights of the reward parts. L0: 0.8 answer (its "QA" part), 0.1 format, 0.1 code execution."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    answer: float = Field(0.8, ge=0)
    format: float = Field(0.1, ge=0)
    code_execution: float = Field(0.1, ge=0)


ANSWER_ONLY = RewardWeights(answer=1.0, format=0.0, code_execution=0.0)
"""All of the reward on the answer."""


def format_score(trajectory: Trajectory, *, min_think_chars: int = 10, min_code_chars: int = 5) -> float:
    """Share of steps with a think longer than `min_think_chars` and code longer than `min_code_chars`.

    L0's format reward; lengths are of the stripped text. A trajectory without steps scores 0.
    """
    if not trajectory.steps:
        return 0.0
    good = sum(
        1
        for step in trajectory.steps
        if step.action.kind == "code"
        and len((step.action.think or "").strip()) > min_think_chars
        and len((step.action.code or "").strip()) > min_code_chars
    )
    return good / len(trajectory.steps)


def code_execution_score(trajectory: Trajectory) -> float:
    """1 minus the share of executed cells that did not end ``ok`` (error, timeout, crash).

    L0's code-execution reward. A trajectory that executed no cell scores 0 (no credit for no code).
    """
    cells = [step.cell for step in trajectory.steps if step.cell is not None]
    if not cells:
        return 0.0
    failed = sum(1 for cell in cells if cell.status is not CellStatus.OK)
    return 1.0 - failed / len(cells)


AnswerScore: TypeAlias = float | bool | Reward
"""What an answer check returns: a number in [0, 1], a bool, or a `Reward` whose total is the answer
score and whose breakdown carries extra metrics (e.g. exact match and F1)."""


def combine_reward(answer: AnswerScore, trajectory: Trajectory, weights: RewardWeights) -> Reward:
    """Weighted sum of the answer score, `format_score` and `code_execution_score`, with a breakdown."""
    extra: dict[str, float] = {}
    if isinstance(answer, Reward):
        extra = dict(answer.breakdown)
        answer_value = answer.total
    else:
        answer_value = float(answer)
    fmt = format_score(trajectory)
    code = code_execution_score(trajectory)
    total = weights.answer * answer_value + weights.format * fmt + weights.code_execution * code
    return Reward(
        total=total, breakdown={"answer": answer_value, **extra, "format": fmt, "code_execution": code}
    )


# --------------------------------------------------------------------------------------------------
# Base classes
# --------------------------------------------------------------------------------------------------


class EnvironmentOptions(TypedDict, total=False):
    """Keyword arguments every `BaseEnvironment` takes (subclasses pass them on with ``**options``)."""

    tools: Sequence[Tool]
    """Host tools an episode gets."""
    kernel_config: KernelConfig | None
    """Kernel set-up for an episode (None: the agent's default)."""
    agent_overrides: Mapping[str, Any] | None
    """Keyword arguments for `Agent`."""
    weights: RewardWeights | Mapping[str, float] | None
    """Reward weights (a mapping is read as `RewardWeights`; None: L0's 0.8 / 0.1 / 0.1)."""
    splits: Mapping[str, float]
    """Split names and fractions for hash-assigned splits (default `DEFAULT_SPLITS`)."""
    split_seed: str
    """Changes which tasks land in which split."""


class BaseEnvironment(ABC):
    """A base for environments: subclass, set `name`, implement `load_tasks` and `score_answer`.

    Tasks are loaded once, lazily. When `load_tasks` returns a flat sequence, splits are assigned by
    hashing `split_key` (disjoint by construction); when it returns a mapping of split name to tasks
    (official split files), that mapping is used, and any ``train`` task whose split key also occurs in
    another split is dropped (`dropped_overlap` counts them), so evaluation never overlaps training.
    The keyword arguments are those of `EnvironmentOptions`.
    """

    name: str = "environment"

    def __init__(
        self,
        *,
        tools: Sequence[Tool] = (),
        kernel_config: KernelConfig | None = None,
        agent_overrides: Mapping[str, Any] | None = None,
        weights: RewardWeights | Mapping[str, float] | None = None,
        splits: Mapping[str, float] = DEFAULT_SPLITS,
        split_seed: str = "nbagent",
    ) -> None:
        _check_splits(splits)
        self._tools = list(tools)
        self._kernel_config = kernel_config
        self._agent_overrides = dict(agent_overrides or {})
        self.weights = weights if isinstance(weights, RewardWeights) else RewardWeights(**(weights or {}))
        self.splits = dict(splits)
        self.split_seed = split_seed
        self.dropped_overlap = 0
        self._split_cache: dict[str, list[TaskSpec]] | None = None

    @abstractmethod
    def load_tasks(self) -> Sequence[TaskSpec] | Mapping[str, Sequence[TaskSpec]]:
        """All tasks, or a mapping of official split name to tasks."""

    @abstractmethod
    def score_answer(self, answer: Any, task: TaskSpec) -> AnswerScore | Awaitable[AnswerScore]:
        """Score the final answer (None when the episode submitted none) against the task."""

    def split_key(self, task: TaskSpec) -> str:
        """The text that decides a task's split; identical keys always share a split."""
        return _normalize_key(task.prompt)

    def _splits(self) -> dict[str, list[TaskSpec]]:
        if self._split_cache is None:
            loaded = self.load_tasks()
            if isinstance(loaded, Mapping):
                self._split_cache = self._official_splits(loaded)
            else:
                self._split_cache = split_tasks(loaded, self.splits, key=self.split_key, seed=self.split_seed)
        return self._split_cache

    def _official_splits(self, loaded: Mapping[str, Sequence[TaskSpec]]) -> dict[str, list[TaskSpec]]:
        out = {name: list(tasks) for name, tasks in loaded.items()}
        if "all" in out:
            raise ConfigError("'all' is reserved for every task; name the official splits otherwise")
        if "train" in out:
            held_out = {self.split_key(t) for name, tasks in out.items() if name != "train" for t in tasks}
            kept = [t for t in out["train"] if self.split_key(t) not in held_out]
            self.dropped_overlap = len(out["train"]) - len(kept)
            out["train"] = kept
        return out

    def tasks(self, split: str) -> Sequence[TaskSpec]:
        splits = self._splits()
        if split == "all":
            return [task for tasks in splits.values() for task in tasks]
        if split not in splits:
            raise UnknownSplitError(
                f"environment {self.name!r} has no split {split!r}; choose one of "
                f"{', '.join([*splits, 'all'])}"
            )
        return splits[split]

    def tools(self) -> list[Tool]:
        return list(self._tools)

    def kernel_config(self) -> KernelConfig | None:
        return self._kernel_config

    def agent_overrides(self) -> dict[str, Any]:
        return dict(self._agent_overrides)

    async def score(self, trajectory: Trajectory) -> Reward:
        answer = self.score_answer(trajectory.final_answer, trajectory.task)
        if inspect.isawaitable(answer):
            answer = await answer
        return combine_reward(answer, trajectory, self.weights)


AnswerCheck: TypeAlias = Callable[[Any, TaskSpec], AnswerScore | Awaitable[AnswerScore]]


class SimpleEnvironment(BaseEnvironment):
    """An environment from a task list and an answer check, for the common case.

    ``check(answer, task)`` returns a float in [0, 1], a bool or a `Reward` (sync or async). The
    default weights give the whole reward to the answer; pass ``weights=RewardWeights()`` for L0's mix.
    """

    def __init__(
        self,
        name: str,
        tasks: Sequence[TaskSpec] | Mapping[str, Sequence[TaskSpec]],
        check: AnswerCheck,
        **options: Unpack[EnvironmentOptions],
    ) -> None:
        options["weights"] = options.get("weights") or ANSWER_ONLY
        super().__init__(**options)
        self.name = name
        self._tasks = tasks
        self._check = check

    def load_tasks(self) -> Sequence[TaskSpec] | Mapping[str, Sequence[TaskSpec]]:
        return self._tasks

    def score_answer(self, answer: Any, task: TaskSpec) -> AnswerScore | Awaitable[AnswerScore]:
        return self._check(answer, task)
