"""Train / dev / test splits: assigned by hashing a task's split key, disjoint by construction."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping

from nbagent.errors import ConfigError
from nbagent.trajectory import TaskSpec

DEFAULT_SPLITS: Mapping[str, float] = {"train": 0.8, "dev": 0.1, "test": 0.1}
"""L0's 80/10/10 re-split. The pseudo-split ``"all"`` always means every task."""


class UnknownSplitError(ConfigError):
    """An environment was asked for a split it does not have."""


def normalize_key(text: str) -> str:
    return " ".join(text.lower().split())


def assign_split(key: str, splits: Mapping[str, float] = DEFAULT_SPLITS, *, seed: str = "nbagent") -> str:
    """The split a task with split key `key` belongs to: a pure function of (seed, key).

    The key is hashed (SHA-256) to a number in [0, 1) that falls into one of the cumulative split
    fractions, so every key lands in exactly one split and splits are disjoint by construction.
    """
    check_splits(splits)
    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2.0**64 * sum(splits.values())
    cumulative = 0.0
    for name, fraction in splits.items():
        cumulative += fraction
        if point < cumulative:
            return name
    return next(reversed(list(splits)))


def check_splits(splits: Mapping[str, float]) -> None:
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
    key_of = key or (lambda t: normalize_key(t.prompt))
    out: dict[str, list[TaskSpec]] = {name: [] for name in splits}
    for task in tasks:
        out[assign_split(key_of(task), splits, seed=seed)].append(task)
    return out
