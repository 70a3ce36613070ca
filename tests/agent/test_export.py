"""Exporters on hand-built trajectories: notebook (validated, real outputs), messages, token sequences."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from nbagent.trajectory import (
    Action,
    CellResult,
    CellStatus,
    DisplayData,
    ErrorOutput,
    ExecuteResult,
    ModelCall,
    ModelInfo,
    Step,
    StreamOutput,
    TaskSpec,
    Termination,
    ToolCallRecord,
    Trajectory,
)
from nbagent.trajectory.export import (
    MissingTokenIdsError,
    to_notebook,
    to_openai_messages,
    to_sharegpt,
    to_token_sequences,
)

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


def make_trajectory(*, with_ids: bool = True) -> Trajectory:
    first = ModelCall(
        messages=[{"role": "system", "content": "SYS"}, {"role": "user", "content": "Task: 17*23?"}],
        completion="<think>multiply</think>\n<code>\nx = 17 * 23\nprint(x)\nx",
        finish_reason="stop",
        prompt_token_ids=[1, 2, 3] if with_ids else None,
        completion_token_ids=[7, 8] if with_ids else None,
        completion_logprobs=[-0.5, -0.25] if with_ids else None,
    )
    cell = CellResult(
        code="x = 17 * 23\nprint(x)\nx\n",
        status=CellStatus.OK,
        execution_count=3,
        outputs=[
            StreamOutput(name="stdout", text="391\n"),
            ExecuteResult(data={"text/plain": "391"}),
            DisplayData(data={"image/png": PNG, "text/plain": "<Figure>"}),
        ],
        tool_calls=[ToolCallRecord(name="lookup", args=["x"], result="y", latency_s=0.01)],
    )
    second = ModelCall(messages=[], completion="I am done.", finish_reason="stop")
    third = ModelCall(
        messages=[], completion="<think>t</think><code>1/0", prompt_token_ids=[1], completion_token_ids=[9]
    )
    bad_cell = CellResult(
        code="1/0\n",
        status=CellStatus.ERROR,
        execution_count=4,
        outputs=[ErrorOutput(ename="ZeroDivisionError", evalue="division by zero", traceback=["tb"])],
    )
    return Trajectory(
        task=TaskSpec(id="t1", prompt="What is 17 * 23?"),
        model=ModelInfo(provider="scripted", model="m"),
        system_prompt="SYS",
        steps=[
            Step(
                index=0,
                model_call=first,
                action=Action(kind="code", think="multiply", code=cell.code),
                cell=cell,
                observation="<output>\n391\n</output>",
            ),
            Step(
                index=1,
                model_call=second,
                action=Action(kind="format_error", think="I am done.", error="No <code> block found."),
                observation="Your reply could not be run: No <code> block found.",
            ),
            Step(
                index=2,
                model_call=third,
                action=Action(kind="code", think="t", code="1/0\n"),
                cell=bad_cell,
                observation="<output>\nZeroDivisionError\n</output>",
                notepad="Facts:\n- 17 * 23 = 391",
            ),
        ],
        final_answer="391",
        termination=Termination.SUBMITTED,
        metadata={"action_format": "xml"},
    )


def test_notebook_validates_and_keeps_real_outputs(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "run.ipynb"
    to_notebook(make_trajectory(), path)
    nb = nbformat.read(str(path), as_version=4)
    nbformat.validate(nb)
    kinds = [c.cell_type for c in nb.cells]
    assert kinds == ["markdown", "markdown", "code", "markdown", "markdown", "code", "markdown", "markdown"]
    assert nb.cells[0].source == "# Task\n\nWhat is 17 * 23?"
    assert nb.cells[1].source == "**Step 1**\n\n> multiply"
    code = nb.cells[2]
    assert code.source == "x = 17 * 23\nprint(x)\nx\n"
    assert code.execution_count == 3
    assert [o.output_type for o in code.outputs] == ["stream", "execute_result", "display_data"]
    assert code.outputs[1].execution_count == 3
    assert code.outputs[2].data["image/png"] == PNG
    assert code.metadata["nbagent"]["tool_calls"][0]["name"] == "lookup"
    assert "could not be run (No <code> block found.)" in nb.cells[3].source
    assert "I am done." in nb.cells[3].source
    assert nb.cells[5].outputs[0].ename == "ZeroDivisionError"
    assert nb.cells[6].source == "## Notepad\n\n```\nFacts:\n- 17 * 23 = 391\n```"
    assert nb.cells[7].source == "## Answer\n\n391"
    assert nb.metadata["nbagent"]["termination"] == "submitted"


def test_notebook_of_an_episode_without_answer() -> None:
    traj = make_trajectory().model_copy(
        update={"final_answer": None, "termination": Termination.ERROR, "error": "ModelError: boom"}
    )
    nb = to_notebook(traj)
    nbformat.validate(nbformat.from_dict(nb))
    assert nb["cells"][-1]["source"].startswith("## No answer\n\nThe episode ended with `error`.")
    assert "ModelError: boom" in nb["cells"][-1]["source"]


def test_notebook_structured_answer_is_json() -> None:
    traj = make_trajectory().model_copy(update={"final_answer": {"city": "Lyon", "population": 520000}})
    assert '"city": "Lyon"' in to_notebook(traj)["cells"][-1]["source"]


def test_openai_messages_close_what_the_stop_sequence_cut() -> None:
    messages = to_openai_messages(make_trajectory())
    assert [m["role"] for m in messages] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
    ]
    assert messages[1]["content"] == "Task: What is 17 * 23?"
    assert messages[2]["content"] == "<think>multiply</think>\n<code>\nx = 17 * 23\nprint(x)\nx</code>"
    assert messages[4]["content"] == "I am done."
    assert json.dumps(messages)
    sharegpt = to_sharegpt(make_trajectory())
    assert [c["from"] for c in sharegpt["conversations"]][:3] == ["system", "human", "gpt"]


def test_token_sequences_mask_the_prompt() -> None:
    with pytest.raises(MissingTokenIdsError, match="Step 2 of trajectory"):
        to_token_sequences(make_trajectory())
    sequences = to_token_sequences(make_trajectory(), on_missing="skip")
    assert [s.step_index for s in sequences] == [0, 2]
    first = sequences[0]
    assert first.input_ids == [1, 2, 3, 7, 8]
    assert first.loss_mask == [0, 0, 0, 1, 1]
    assert first.logprobs == [None, None, None, -0.5, -0.25]
    assert first.prompt_length == 3
    assert sequences[1].logprobs == [None, None]  # the server returned no logprobs for that step
