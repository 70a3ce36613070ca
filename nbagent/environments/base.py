"""The `Environment` protocol, and `BaseEnvironment` / `SimpleEnvironment` that make one a few lines.

Environments are found by name in `nbagent.environments.registry`, split in `.splits` and scored with
the reward parts of `.rewards`. These modules stay light: pydantic (through the trajectory contract)
and the standard library.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, TypedDict, Unpack, runtime_checkable

from nbagent.environments.rewards import ANSWER_ONLY, AnswerScore, RewardWeights, combine_reward
from nbagent.environments.splits import (
    DEFAULT_SPLITS,
    UnknownSplitError,
    check_splits,
    normalize_key,
    split_tasks,
)
from nbagent.errors import ConfigError
from nbagent.trajectory import Reward, TaskSpec, Trajectory

if TYPE_CHECKING:
    from nbagent.kernel import KernelConfig
    from nbagent.tools import Tool

Task: TypeAlias = TaskSpec
"""A task is the trajectory contract's `TaskSpec`: id, prompt, references, metadata."""


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
        check_splits(splits)
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
        return normalize_key(task.prompt)

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
