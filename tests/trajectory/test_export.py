"""Exporters on hand-built trajectories: notebook (validated, real outputs) and messages."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat

from nbagent.trajectory import (
    CellResult,
    CellStatus,
    DisplayData,
    ErrorOutput,
    ExecuteResult,
    StreamOutput,
    TaskSpec,
    Termination,
    ToolCallRecord,
    Trajectory,
)
from nbagent.trajectory.export import to_notebook, to_openai_messages, to_sharegpt
from tests.fixtures.trajectories import model_call, step, trajectory

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


def three_steps() -> Trajectory:
    """A cell with rich outputs and a tool call, a reply with no code, a failing cell with a notepad."""
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
    bad_cell = CellResult(
        code="1/0\n",
        status=CellStatus.ERROR,
        execution_count=4,
        outputs=[ErrorOutput(ename="ZeroDivisionError", evalue="division by zero", traceback=["tb"])],
    )
    sent = [{"role": "system", "content": "SYS"}, {"role": "user", "content": "Task: 17*23?"}]
    return trajectory(
        TaskSpec(id="t1", prompt="What is 17 * 23?"),
        [
            step(
                0,
                "multiply",
                cell.code,
                cell,
                call=model_call("<think>multiply</think>\n<code>\nx = 17 * 23\nprint(x)\nx", sent),
                observation="<output>\n391\n</output>",
            ),
            step(
                1,
                "I am done.",
                format_error="No <code> block found.",
                call=model_call("I am done."),
                observation="Your reply could not be run: No <code> block found.",
            ),
            step(
                2,
                "t",
                "1/0\n",
                bad_cell,
                call=model_call("<think>t</think><code>1/0"),
                observation="<output>\nZeroDivisionError\n</output>",
                notepad="Facts:\n- 17 * 23 = 391",
            ),
        ],
        "391",
        system_prompt="SYS",
        metadata={"action_format": "xml"},
    )


def test_notebook_validates_and_keeps_real_outputs(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "run.ipynb"
    to_notebook(three_steps(), path)
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
    traj = three_steps().model_copy(
        update={"final_answer": None, "termination": Termination.ERROR, "error": "ModelError: boom"}
    )
    nb = to_notebook(traj)
    nbformat.validate(nbformat.from_dict(nb))
    assert nb["cells"][-1]["source"].startswith("## No answer\n\nThe episode ended with `error`.")
    assert "ModelError: boom" in nb["cells"][-1]["source"]


def test_notebook_structured_answer_is_json() -> None:
    traj = three_steps().model_copy(update={"final_answer": {"city": "Lyon", "population": 520000}})
    assert '"city": "Lyon"' in to_notebook(traj)["cells"][-1]["source"]


def test_a_record_without_recorded_turns_exports_what_the_model_was_sent_and_replied() -> None:
    messages = to_openai_messages(three_steps())
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
    assert messages[1]["content"] == "Task: 17*23?"  # the first user message of the first call
    assert (
        messages[2]["content"] == "<think>multiply</think>\n<code>\nx = 17 * 23\nprint(x)\nx"
    )  # the raw reply
    assert messages[4]["content"] == "I am done."
    assert json.dumps(messages)
    sharegpt = to_sharegpt(three_steps())
    assert [c["from"] for c in sharegpt["conversations"]][:3] == ["system", "human", "gpt"]


def test_the_recorded_assistant_text_is_used_as_it_is() -> None:
    traj = three_steps()
    traj.metadata["action_format"] = "custom"
    traj.task_message = "Task, as rendered"
    for recorded in traj.steps:
        recorded.assistant_text = f"recorded {recorded.index}"
    messages = to_openai_messages(traj)
    assert messages[1] == {"role": "user", "content": "Task, as rendered"}
    assert [m["content"] for m in messages if m["role"] == "assistant"] == [
        "recorded 0",
        "recorded 1",
        "recorded 2",
    ]
    assert "```\nrecorded 1\n```" in to_notebook(traj)["cells"][3]["source"]
