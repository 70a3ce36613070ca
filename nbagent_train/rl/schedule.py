"""What each iteration trains on: its tasks (`TaskSchedule`), its batch of episodes, and which of them
are fresh enough for the staleness bound."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass

import anyio

from nbagent.trajectory import TaskSpec, Trajectory, read_trajectories
from nbagent_train.errors import TrainConfigError
from nbagent_train.runs.folder import RunFolder


class TaskSchedule:
    """Which tasks iteration i uses: consecutive slices of a stream of shuffled passes over the split.

    A pure function of (tasks, B, seed, i), so a resumed run asks for the same tasks again.
    """

    def __init__(self, tasks: Sequence[TaskSpec], per_iteration: int, seed: int) -> None:
        if not tasks:
            raise TrainConfigError("env.split: the environment has no tasks in that split")
        if per_iteration > len(tasks):
            raise TrainConfigError(
                f"rollout.tasks_per_iteration: {per_iteration} tasks per iteration, but the split has only "
                f"{len(tasks)}; lower it or use a larger split"
            )
        self.tasks = list(tasks)
        self.per_iteration = per_iteration
        self.seed = seed
        self._orders: dict[int, list[int]] = {}

    def _order(self, epoch: int) -> list[int]:
        if epoch not in self._orders:
            order = list(range(len(self.tasks)))
            random.Random(f"{self.seed}:{epoch}").shuffle(order)
            self._orders[epoch] = order
        return self._orders[epoch]

    def batch(self, iteration: int) -> list[TaskSpec]:
        """The tasks of `iteration` (1-based); a batch that crosses a pass boundary never repeats a task."""
        n = len(self.tasks)
        start = (iteration - 1) * self.per_iteration
        chosen: list[int] = []
        position = start
        while len(chosen) < self.per_iteration:
            index = self._order(position // n)[position % n]
            if index not in chosen:
                chosen.append(index)
            position += 1
        return [self.tasks[i] for i in chosen]


@dataclass
class Batch:
    """The episodes collected for one iteration."""

    iteration: int
    version: int
    """Policy version that sampled the batch (the published version when its collection started)."""
    trajectories: list[Trajectory]
    rollout_s: float
    written: int = 0
    """Episodes collected by this process (the rest were already in the file: a resumed collection)."""


def select_fresh(
    trajectories: Sequence[Trajectory], current_version: int, staleness: int
) -> tuple[list[Trajectory], int]:
    """Episodes sampled at most `staleness` versions before `current_version`, and how many were not.

    An episode without a recorded integer version is treated as too old.
    """
    fresh = []
    for t in trajectories:
        version = t.model.policy_version
        if isinstance(version, int) and current_version - staleness <= version <= current_version:
            fresh.append(t)
    return fresh, len(trajectories) - len(fresh)


def load_batch(folder: RunFolder, iteration: int, version: int, rollout_s: float, written: int) -> Batch:
    """The batch of `iteration` as its trajectory file holds it (a torn line is skipped)."""
    trajectories = list(read_trajectories(folder.trajectories(iteration), on_error="skip"))
    return Batch(iteration, version, trajectories, rollout_s, written)


def mark_ready(folder: RunFolder, batch: Batch) -> None:
    """Tell the other training processes that the batch of its iteration is collected."""
    marker = {
        "iteration": batch.iteration,
        "version": batch.version,
        "rollout_s": batch.rollout_s,
        "written": batch.written,
    }
    folder.ready_marker(batch.iteration).write_text(json.dumps(marker))


async def wait_for_batch(folder: RunFolder, iteration: int) -> Batch:
    """A non-main process: the batch the main process collected, once its marker is written."""
    marker = folder.ready_marker(iteration)
    # The marker is written by another process: there is nothing in this one to wait on.
    while not marker.is_file():  # noqa: ASYNC110
        await anyio.sleep(0.5)
    info = json.loads(marker.read_text())
    return load_batch(folder, iteration, int(info["version"]), float(info["rollout_s"]), int(info["written"]))
