"""The trajectory contract: round trips, append-only writing, corrupt lines named by file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nbagent.trajectory import (
    SCHEMA_VERSION,
    CellResult,
    CellStatus,
    CorruptTrajectoryError,
    ErrorOutput,
    StreamOutput,
    TaskSpec,
    Trajectory,
    TrajectoryWriter,
    read_trajectories,
)
from tests.fixtures.trajectories import model_call, step, trajectory


def record(task_id: str = "t1", completion: str = "<think>x</think><code>print(1)</code>") -> Trajectory:
    """A scored one-step episode with cell outputs, an error and token ids: what a round trip must keep."""
    cell = CellResult(
        code="print(1)",
        status=CellStatus.ERROR,
        outputs=[
            StreamOutput(name="stdout", text="1\n"),
            ErrorOutput(ename="ValueError", evalue="bad", traceback=["tb"]),
        ],
        execution_count=1,
        duration_s=0.01,
    )
    call = model_call(
        completion,
        prompt_token_ids=[1, 2, 3],
        completion_token_ids=[4, 5],
        completion_logprobs=[-0.1, -0.2],
        finish_reason="stop",
    )
    return trajectory(
        TaskSpec(id=task_id, prompt="q", references=["1"]),
        [step(0, "x", "print(1)", cell, call=call, assistant_text=completion, observation="1")],
        "1",
        reward=1.0,
        breakdown={"qa": 1.0},
    )


def test_round_trip_keeps_outputs_and_token_ids(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    with TrajectoryWriter(path) as writer:
        writer.write(record("a"))
        writer.write(record("b"))
    got = list(read_trajectories(path))
    assert [t.task.id for t in got] == ["a", "b"]
    step = got[0].steps[0]
    assert step.model_call.completion_token_ids == [4, 5]
    assert step.cell is not None
    assert isinstance(step.cell.outputs[1], ErrorOutput)
    assert step.cell.outputs[1].ename == "ValueError"
    assert got[0] == record("a").model_copy(update={"id": got[0].id})


def test_writer_appends_and_flushes_each_record(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    writer = TrajectoryWriter(path)
    writer.write(record("a"))
    # Visible to a reader before close: a crash after this point loses nothing written.
    assert len(path.read_text().splitlines()) == 1
    writer.close()
    with TrajectoryWriter(path) as again:
        again.write(record("b"))
    assert [t.task.id for t in read_trajectories(path)] == ["a", "b"]


def test_corrupt_line_is_named_or_skipped(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    good = record("a").to_json_line()
    path.write_text(good + '{"schema_version": 1, "task": \n' + good + "[1, 2]\n" + good[: len(good) // 2])
    with pytest.raises(CorruptTrajectoryError) as info:
        list(read_trajectories(path))
    assert info.value.line_no == 2
    assert f"{path}:2" in str(info.value)
    assert "on_error='skip'" in str(info.value)
    assert [t.task.id for t in read_trajectories(path, on_error="skip")] == ["a", "a"]


def test_unknown_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    data = json.loads(record().to_json_line())
    data["schema_version"] = SCHEMA_VERSION + 1
    path.write_text(json.dumps(data) + "\n")
    with pytest.raises(CorruptTrajectoryError, match="schema_version"):
        list(read_trajectories(path))


def test_a_record_from_before_the_later_optional_fields_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    data = json.loads(record().to_json_line())
    del data["termination_detail"], data["unfinished_call"], data["steps"][0]["assistant_text"]
    path.write_text(json.dumps(data) + "\n")
    (old,) = read_trajectories(path)
    assert (old.termination_detail, old.unfinished_call) == (None, None)
    assert old.steps[0].assistant_text is None
    assert old.steps[0] == record().steps[0].model_copy(update={"assistant_text": None})


@settings(max_examples=50, deadline=None)
@given(completion=st.text(), ids=st.lists(st.integers(min_value=0, max_value=2**31 - 1)))
def test_completion_text_and_ids_survive_exactly(completion: str, ids: list[int]) -> None:
    traj = record(completion=completion)
    traj.steps[0].model_call.completion_token_ids = ids
    back = Trajectory.model_validate_json(traj.to_json_line())
    assert back.steps[0].model_call.completion == completion
    assert back.steps[0].model_call.completion_token_ids == ids


def test_append_after_a_torn_write_keeps_the_new_record_whole(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    good = record("a").to_json_line()
    path.write_text(good + good[:40])  # the previous process died mid-write
    with TrajectoryWriter(path) as writer:
        writer.write(record("b"))
    assert [t.task.id for t in read_trajectories(path, on_error="skip")] == ["a", "b"]
    with pytest.raises(CorruptTrajectoryError) as info:
        list(read_trajectories(path))
    assert info.value.line_no == 2
