"""What a collection runs and what its output file already holds: (task, sample) jobs, stable group ids,
resuming a file a killed collector left behind."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nbagent.errors import ConfigError, NBAgentError
from nbagent.trajectory import TaskSpec, read_trajectories, truncate_torn_tail


class OutputExistsError(ConfigError):
    """The output file already holds trajectories and resuming was not asked for."""


class RolloutError(NBAgentError):
    """The episode workers could not be set up (nothing was run)."""


def group_id_for(environment: str, task_id: str, tag: str | None = None) -> str:
    """The stable group id of a task's samples: a hash of environment, task id and an optional tag.

    The tag separates collections that must not share groups (e.g. one per RL iteration).
    """
    key = "\x00".join([environment, task_id, tag or ""])
    return hashlib.sha256(key.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class EpisodeJob:
    """One (task, sample) pair to run."""

    task: TaskSpec
    sample_index: int
    group_id: str

    @property
    def key(self) -> tuple[str, int]:
        return (self.group_id, self.sample_index)


def plan_jobs(
    environment: str, tasks: Sequence[TaskSpec], samples: int, tag: str | None = None
) -> list[EpisodeJob]:
    """Every (task, sample) pair, task by task so that groups complete together."""
    if samples < 1:
        raise ConfigError(f"samples must be at least 1, got {samples}")
    ids = [t.id for t in tasks]
    dupes = sorted({i for i in ids if ids.count(i) > 1}) if len(set(ids)) != len(ids) else []
    if dupes:
        raise ConfigError(f"task ids must be unique; repeated: {', '.join(dupes[:5])}")
    return [
        EpisodeJob(task, k, group_id_for(environment, task.id, tag)) for task in tasks for k in range(samples)
    ]


@dataclass
class ResumeState:
    """What an existing output file already holds."""

    done: set[tuple[str, int]] = field(default_factory=set)
    """(group id, sample index) pairs already written."""
    records: int = 0
    corrupt_lines: int = 0
    """Complete lines that did not parse (left in place; readers skip them with on_error="skip")."""
    truncated_bytes: int = 0
    """Size of a torn last record (a write cut short by a kill) that was removed."""


def prepare_output(path: str | Path, *, resume: bool) -> ResumeState:
    """Check the output file and, when resuming, learn which pairs it already holds.

    A torn last record (no final newline: the process died while writing it) is truncated away, and
    its episode runs again. Complete but unparsable lines are counted and left in place. Without
    `resume`, a non-empty file raises `OutputExistsError` rather than mixing two collections.
    """
    p = Path(path)
    state = ResumeState()
    if not p.exists() or p.stat().st_size == 0:
        return state
    if not resume:
        raise OutputExistsError(
            f"{p} already holds trajectories. Pass --resume (resume=True) to continue that collection, "
            "or choose another output path."
        )
    state.truncated_bytes = truncate_torn_tail(p)
    with p.open("rb") as f:
        lines = sum(1 for line in f if line.strip())
    for traj in read_trajectories(p, on_error="skip"):
        state.records += 1
        if traj.group_id is not None:
            state.done.add((traj.group_id, traj.sample_index))
    state.corrupt_lines = lines - state.records
    return state
