"""Loop bookkeeping without servers: task schedule, staleness, run folder, resume set-aside, metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nbagent.trajectory import (
    CellStatus,
    ModelInfo,
    TaskSpec,
    Termination,
    Trajectory,
    TrajectoryWriter,
    read_trajectories,
)
from nbagent_train.config.loading import build_config
from nbagent_train.config.rl import RLConfig
from nbagent_train.errors import TrainConfigError
from nbagent_train.rl.record import IterationRecord, reward_trend
from nbagent_train.rl.schedule import TaskSchedule, select_fresh
from nbagent_train.runs.episodes import episode_metrics
from nbagent_train.runs.folder import RunFolder, RunState
from nbagent_train.runs.metrics import read_metrics
from nbagent_train.runs.plots import plot_metrics, rolling_mean
from tests.fixtures.trajectories import model_call, step, trajectory


def tasks(n: int) -> list[TaskSpec]:
    return [TaskSpec(id=f"t{i}", prompt=f"q{i}") for i in range(n)]


def by_policy(
    version: int | None,
    *,
    reward: float | None = 1.0,
    correct: float = 1.0,
    steps: int = 1,
    cell_ok: bool = True,
    termination: Termination = Termination.SUBMITTED,
) -> Trajectory:
    """An episode sampled by policy `version`: `steps` cells, 3 prompt and 2 completion tokens each."""
    call = model_call("x", prompt_token_ids=[1, 2, 3], completion_token_ids=[4, 5])
    status = CellStatus.OK if cell_ok else CellStatus.ERROR
    return trajectory(
        steps=[step(i, code="1", cell=status, call=call) for i in range(steps)],
        reward=reward,
        breakdown={"correct": correct},
        termination=termination,
        model=ModelInfo(provider="openai", model="policy", policy_version=version),
    )


# ------------------------------------------------------------------------------------------ schedule --


def test_schedule_is_deterministic_covers_each_pass_and_never_repeats_in_a_batch() -> None:
    pool = tasks(10)
    a, b = TaskSchedule(pool, 4, seed=3), TaskSchedule(pool, 4, seed=3)
    batches = [a.batch(i) for i in range(1, 8)]
    assert batches == [b.batch(i) for i in range(1, 8)]
    for batch in batches:
        assert len({t.id for t in batch}) == 4
    first_pass = [t.id for batch in batches[:2] for t in batch] + [t.id for t in batches[2][:2]]
    assert sorted(first_pass) == sorted(t.id for t in pool)
    assert [t.id for t in TaskSchedule(pool, 4, seed=4).batch(1)] != [t.id for t in batches[0]]


def test_schedule_refuses_more_tasks_per_iteration_than_the_split_holds() -> None:
    with pytest.raises(TrainConfigError, match="tasks_per_iteration"):
        TaskSchedule(tasks(3), 4, seed=0)
    with pytest.raises(TrainConfigError, match="no tasks"):
        TaskSchedule([], 1, seed=0)


# ------------------------------------------------------------------------------------------ staleness --


def test_select_fresh_keeps_versions_within_the_bound() -> None:
    batch = [by_policy(v) for v in (None, 2, 3, 4, 5, 6)]
    fresh, stale = select_fresh(batch, current_version=5, staleness=0)
    assert [t.model.policy_version for t in fresh] == [5]
    assert stale == 5
    fresh, stale = select_fresh(batch, current_version=5, staleness=2)
    assert [t.model.policy_version for t in fresh] == [3, 4, 5]
    assert stale == 3


def test_staleness_needs_importance_sampling() -> None:
    with pytest.raises(TrainConfigError, match="is_correction"):
        build_config({"loop": {"staleness": 1}, "loss": {"is_correction": False}}, cls=RLConfig)
    assert build_config({"loop": {"staleness": 1}}, cls=RLConfig).loop.staleness == 1
    with pytest.raises(TrainConfigError, match=r"loop\.stalenes"):
        build_config({"loop": {"stalenes": 1}}, cls=RLConfig)


# ------------------------------------------------------------------------------------------ run folder --


def test_state_round_trips_and_a_corrupt_state_is_named(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    assert folder.read_state() == RunState()
    state = RunState(iterations_done=3, policy_version=3, checkpoint="checkpoints/step-000003", wall_s=12.5)
    folder.write_state(state)
    assert folder.read_state() == state
    folder.state_path.write_text("{not json")
    with pytest.raises(Exception, match=r"state\.json is unreadable"):
        folder.read_state()


def test_supersede_sets_aside_later_iterations_and_keeps_still_valid_episodes(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    lines = [json.dumps({"iteration": i, "reward_mean": i / 10}) for i in (1, 2, 3)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + '\n{"iteration": 4, "rew')  # torn by a kill
    for iteration, versions in {2: [1, 1], 3: [2, 2, 3], 4: [3]}.items():
        with TrajectoryWriter(folder.trajectories(iteration)) as writer:
            for v in versions:
                writer.write(by_policy(v))
        folder.ready_marker(iteration).write_text("{}")
    counts = folder.supersede(after=2, keep_version=2)
    assert counts == {"metrics_lines": 2, "episodes_kept": 2, "episodes_set_aside": 2}
    assert [r["iteration"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2]
    assert len(list(read_trajectories(folder.trajectories(2)))) == 2  # untouched
    assert [t.model.policy_version for t in read_trajectories(folder.trajectories(3))] == [2, 2]
    assert list(read_trajectories(folder.trajectories(4))) == []
    assert folder.ready_marker(2).exists()
    assert not folder.ready_marker(3).exists()
    aside = sorted(p.name for p in (tmp_path / "superseded").iterdir())
    assert len(aside) == 3
    assert aside[0].startswith("iter-00003-")
    assert aside[2].startswith("metrics-")
    originals = (tmp_path / "superseded" / aside[0]).read_text().splitlines()
    assert len(originals) == 3  # the whole file of iteration 3, as it was


# ------------------------------------------------------------------------------------------ metrics --


def test_episode_metrics_of_a_batch() -> None:
    batch = [
        by_policy(0, reward=1.0, correct=1.0),
        by_policy(0, reward=0.2, correct=0.0, steps=2, cell_ok=False, termination=Termination.MAX_STEPS),
        by_policy(0, reward=None, steps=0, termination=Termination.ERROR),
    ]
    m = episode_metrics(batch, success_key="correct")
    assert m["episodes"] == 3
    assert m["unscored"] == 1
    assert m["reward_mean"] == pytest.approx(0.4)
    assert m["reward_max"] == 1.0
    assert m["success_rate"] == pytest.approx(1 / 3)
    assert m["reward/correct"] == pytest.approx(0.5)
    assert m["steps_mean"] == pytest.approx(1.0)
    assert m["steps_max"] == 2
    assert m["termination/submitted"] == pytest.approx(1 / 3)
    assert m["termination/max_steps"] == pytest.approx(1 / 3)
    assert m["tokens/prompt"] == 9
    assert m["tokens/completion"] == 6
    assert m["cell_error_rate"] == pytest.approx(2 / 3)


def test_reward_trend_and_rolling_mean() -> None:
    rewards = [0.1, 0.2, 0.3, 0.5, 0.7, 0.9]
    records = [
        IterationRecord(i, i - 1, 0, 0, 4, episodes={"reward_mean": r}) for i, r in enumerate(rewards, 1)
    ]
    records.reverse()  # the trend follows iterations, not list order
    assert reward_trend(records, window=2) == (pytest.approx(0.15), pytest.approx(0.8))
    assert reward_trend(records[-1:], window=3) == (0.1, 0.1)
    assert rolling_mean([1.0, 3.0, 5.0], 2) == [1.0, 2.0, 4.0]


def test_plots_are_written_from_metrics(tmp_path: Path) -> None:
    assert plot_metrics(tmp_path) == []
    with (tmp_path / "metrics.jsonl").open("w") as f:
        for i in range(1, 6):
            f.write(
                json.dumps(
                    {
                        "iteration": i,
                        "reward_mean": i / 10,
                        "reward_std": 0.1,
                        "success_rate": i / 20,
                        "time/rollout_s": 3.0,
                        "update/loss": 0.01,
                    }
                )
                + "\n"
            )
    written = plot_metrics(tmp_path)
    assert [p.name for p in written] == ["reward.png", "metrics.png"]
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size > 5000
