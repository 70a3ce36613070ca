"""Planning, resume bookkeeping (torn tails, corrupt lines), the request bound and eval metrics."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from nbagent.errors import ConfigError
from nbagent.models.bounded import BoundedModel
from nbagent.rollout import CollectSummary, OutputExistsError, group_id_for, plan_jobs, prepare_output
from nbagent.trajectory import (
    ModelCall,
    ModelInfo,
    SamplingSettings,
    TaskSpec,
    Termination,
    Trajectory,
    TrajectoryWriter,
)
from nbagent.trajectory.evaluation import evaluate, pass_at_k, render_report
from tests.fixtures.trajectories import trajectory


def traj(task_id: str, sample: int, *, dataset: str | None = None, **fields: Any) -> Trajectory:
    """Sample `sample` of task `task_id` (of `dataset`, if given) in environment `env`, grouped as collection
    groups it; `fields` as `trajectory` takes them."""
    task = TaskSpec(id=task_id, prompt="q", metadata={"dataset": dataset} if dataset else {})
    return trajectory(
        task, environment="env", group_id=group_id_for("env", task_id), sample_index=sample, **fields
    )


def tasks(n: int) -> list[TaskSpec]:
    return [TaskSpec(id=f"t{i}", prompt=f"q{i}") for i in range(n)]


# ------------------------------------------------------------------------------------------ planning --


def test_group_ids_are_stable_and_separate_tags_envs_and_tasks() -> None:
    assert group_id_for("qa", "t1") == group_id_for("qa", "t1")
    ids = {group_id_for("qa", "t1"), group_id_for("qa", "t2"), group_id_for("math", "t1")}
    ids.add(group_id_for("qa", "t1", "iter-3"))
    assert len(ids) == 4


def test_plan_jobs_gives_every_pair_once_grouped_by_task() -> None:
    jobs = plan_jobs("qa", tasks(3), samples=2)
    assert [(j.task.id, j.sample_index) for j in jobs] == [
        ("t0", 0), ("t0", 1), ("t1", 0), ("t1", 1), ("t2", 0), ("t2", 1),
    ]  # fmt: skip
    assert jobs[0].group_id == jobs[1].group_id != jobs[2].group_id
    assert len({j.key for j in jobs}) == 6


def test_plan_jobs_rejects_duplicate_task_ids_and_zero_samples() -> None:
    with pytest.raises(ConfigError, match="repeated: t0"):
        plan_jobs("qa", [*tasks(2), TaskSpec(id="t0", prompt="again")], samples=1)
    with pytest.raises(ConfigError, match="samples must be at least 1"):
        plan_jobs("qa", tasks(1), samples=0)


# ------------------------------------------------------------------------------------------- resume --


def test_prepare_output_refuses_a_non_empty_file_without_resume(tmp_path: Path) -> None:
    out = tmp_path / "t.jsonl"
    assert prepare_output(out, resume=False).done == set()
    with TrajectoryWriter(out) as w:
        w.write(traj("t0", 0))
    with pytest.raises(OutputExistsError, match="--resume"):
        prepare_output(out, resume=False)


def test_prepare_output_reads_done_pairs_and_truncates_a_torn_tail(tmp_path: Path) -> None:
    out = tmp_path / "t.jsonl"
    with TrajectoryWriter(out) as w:
        w.write(traj("t0", 0))
        w.write(traj("t0", 1))
    whole = out.read_bytes()
    torn = traj("t1", 0).to_json_line()[:57]  # a record whose write was cut short
    out.write_bytes(whole + torn.encode())
    state = prepare_output(out, resume=True)
    assert state.done == {(group_id_for("env", "t0"), 0), (group_id_for("env", "t0"), 1)}
    assert state.truncated_bytes == 57
    assert state.corrupt_lines == 0
    assert out.read_bytes() == whole


def test_prepare_output_counts_and_keeps_corrupt_complete_lines(tmp_path: Path) -> None:
    out = tmp_path / "t.jsonl"
    with TrajectoryWriter(out) as w:
        w.write(traj("t0", 0))
    with out.open("a") as f:
        f.write('{"not": "a trajectory"}\n')
    with TrajectoryWriter(out) as w:
        w.write(traj("t2", 1))
    state = prepare_output(out, resume=True)
    assert state.records == 2
    assert state.corrupt_lines == 1
    assert state.truncated_bytes == 0
    assert (group_id_for("env", "t2"), 1) in state.done


def test_a_torn_single_line_file_is_emptied(tmp_path: Path) -> None:
    out = tmp_path / "t.jsonl"
    out.write_text('{"schema_version": 1, "task"')
    state = prepare_output(out, resume=True)
    assert state.truncated_bytes == len('{"schema_version": 1, "task"')
    assert out.read_bytes() == b""


def test_summary_counts_failures_terminations_and_reward_mean(tmp_path: Path) -> None:
    summary = CollectSummary(out=tmp_path / "x", planned=4, skipped=1)
    summary.add(traj("a", 0, reward=1.0))
    summary.add(traj("a", 1, reward=0.0, termination=Termination.ERROR))
    unscored = traj("b", 0)
    unscored.metadata["score_error"] = "ValueError: judge down"
    summary.add(unscored)
    assert summary.written == 3
    assert summary.failed == 2
    assert summary.complete
    assert summary.reward_mean == 0.5
    assert summary.terminations == {"submitted": 2, "error": 1}


# ------------------------------------------------------------------------------------ request bound --


class SlowModel:
    """A minimal Model that records how many calls overlap."""

    def __init__(self) -> None:
        self.active = 0
        self.peak = 0

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(provider="test", model="slow")

    async def complete(
        self, messages: list[dict[str, object]], settings: SamplingSettings, *, prefill: str | None = None
    ) -> ModelCall:
        self.active += 1
        self.peak = max(self.peak, self.active)
        await asyncio.sleep(0.01)
        self.active -= 1
        return ModelCall(messages=messages, completion="ok")

    def count_tokens(self, messages: list[dict[str, object]]) -> int | None:
        return None

    async def aclose(self) -> None:
        pass


async def test_bounded_model_caps_requests_in_flight() -> None:
    inner = SlowModel()
    bounded = BoundedModel(inner, 3)
    calls = await asyncio.gather(*[bounded.complete([], SamplingSettings()) for _ in range(20)])
    assert [c.completion for c in calls] == ["ok"] * 20
    assert inner.peak == 3 == bounded.max_in_flight
    assert bounded.info.model == "slow"
    with pytest.raises(ConfigError):
        BoundedModel(inner, 0)


# ------------------------------------------------------------------------------------------ metrics --


def test_pass_at_k_matches_hand_computed_values() -> None:
    assert pass_at_k(4, 0, 2) == 0.0
    assert pass_at_k(4, 4, 1) == 1.0
    assert pass_at_k(4, 1, 1) == 0.25
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - 3 / 6)  # C(3,2)/C(4,2) of drawing no correct one
    assert pass_at_k(2, 1, 2) == 1.0
    with pytest.raises(ValueError, match="k <= n"):
        pass_at_k(2, 1, 3)


def test_evaluate_builds_per_dataset_rows_and_an_all_row() -> None:
    def em(v: float) -> dict[str, float]:
        return {"exact_match": v, "f1": v / 2 + 0.25}

    trajs = [
        traj("a", 0, reward=1.0, breakdown=em(1.0), dataset="hotpot"),
        traj("a", 1, reward=0.0, breakdown=em(0.0), dataset="hotpot"),
        traj("b", 0, reward=0.0, breakdown=em(0.0), dataset="hotpot"),
        traj("b", 1, reward=None, dataset="hotpot", termination=Termination.ERROR),
        traj("c", 0, reward=1.0, breakdown=em(1.0), dataset="simpleqa"),
        traj("c", 1, reward=1.0, breakdown=em(1.0), dataset="simpleqa"),
    ]
    report = evaluate(trajs)
    hotpot = report.row("hotpot")
    assert (hotpot.tasks, hotpot.episodes, hotpot.k, hotpot.unscored) == (2, 4, 2, 1)
    assert hotpot.metrics["exact_match"] == pytest.approx(1 / 3)  # over the 3 scored episodes
    assert hotpot.metrics["f1"] == pytest.approx((0.75 + 0.25 + 0.25) / 3)
    assert hotpot.pass_at_k == 0.5  # task a solved once in 2, task b never
    assert hotpot.mean_at_k == 0.25
    assert hotpot.terminations == {"submitted": 3, "error": 1}
    assert report.row("simpleqa").pass_at_k == 1.0
    everything = report.row("all")
    assert (everything.tasks, everything.episodes) == (3, 6)
    assert everything.mean_at_k == pytest.approx((0.5 + 0 + 1) / 3)


def test_evaluate_success_metric_and_threshold_are_configurable() -> None:
    trajs = [traj("a", 0, reward=0.6, breakdown={"f1": 0.6})]
    assert evaluate(trajs).row("env").pass_at_k == 0.0  # no exact_match key: unsolved
    assert evaluate(trajs, success_metric="f1", threshold=0.5).row("env").pass_at_k == 1.0
    assert evaluate(trajs, success_metric="total", threshold=0.7).row("env").pass_at_k == 0.0


def test_render_report_prints_the_shown_columns(capsys: pytest.CaptureFixture[str]) -> None:
    from rich.console import Console

    report = evaluate([traj("a", 0, reward=1.0, breakdown={"exact_match": 1.0, "f1": 1.0})])
    render_report(report, Console(width=160, force_terminal=False))
    out = capsys.readouterr().out
    for word in ("EM", "F1", "pass@1", "mean@1", "100.0", "env"):
        assert word in out
    assert "judge" not in out
