"""Exporters: a `Trajectory` as chat messages or as a Jupyter notebook.

- `to_openai_messages`: the whole episode as one OpenAI chat conversation (no context trimming).
- `to_sharegpt`: the same conversation in ShareGPT's ``{"conversations": [{"from", "value"}]}`` form.
- `to_notebook`: an ``.ipynb`` (nbformat 4) with the task, the model's reasoning as markdown, its code as
  code cells with their real outputs (images included), and the final answer.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from nbagent.trajectory.schema import CellResult, JSONDict, Step, Trajectory

ChatMessage = dict[str, Any]


def assistant_text(step: Step) -> str:
    """The assistant message a step added to the history (`Step.assistant_text`, recorded by the agent
    exactly as its next model call saw it); records written before that field get the raw reply,
    prefill + completion."""
    if step.assistant_text is not None:
        return step.assistant_text
    return (step.model_call.prefill or "") + step.model_call.completion


def task_message(traj: Trajectory) -> str:
    """The user message that opened the episode (`Trajectory.task_message`); for records written before
    that field, the first user message the model was sent, else the task's prompt."""
    if traj.task_message is not None:
        return traj.task_message
    sent = traj.steps[0].model_call.messages if traj.steps else []
    return next((str(m["content"]) for m in sent if m.get("role") == "user"), traj.task.prompt)


def to_openai_messages(traj: Trajectory) -> list[ChatMessage]:
    """The episode as OpenAI chat messages: system, task, then per step the reply and its observation."""
    messages: list[ChatMessage] = []
    if traj.system_prompt:
        messages.append({"role": "system", "content": traj.system_prompt})
    messages.append({"role": "user", "content": task_message(traj)})
    for step in traj.steps:
        messages.append({"role": "assistant", "content": assistant_text(step)})
        if step.observation:
            messages.append({"role": "user", "content": step.observation})
    return messages


def to_sharegpt(traj: Trajectory) -> dict[str, Any]:
    """The episode in ShareGPT form: ``{"id", "conversations": [{"from": "system"|"human"|"gpt", ...}]}``."""
    roles = {"system": "system", "user": "human", "assistant": "gpt"}
    return {
        "id": traj.id,
        "conversations": [
            {"from": roles[m["role"]], "value": m["content"]} for m in to_openai_messages(traj)
        ],
    }


# --------------------------------------------------------------------------------------------------
# Notebook
# --------------------------------------------------------------------------------------------------


def _cell_outputs(cell: CellResult) -> list[JSONDict]:
    outputs: list[JSONDict] = []
    for out in cell.outputs:
        if out.output_type == "execute_result" and out.execution_count is None:
            out = out.model_copy(update={"execution_count": cell.execution_count})
        outputs.append(out.model_dump(mode="json"))
    if cell.note:
        outputs.append({"output_type": "stream", "name": "stderr", "text": f"[nbagent] {cell.note}\n"})
    return outputs


def _markdown(source: str) -> JSONDict:
    return {"cell_type": "markdown", "id": uuid.uuid4().hex[:12], "metadata": {}, "source": source}


def _code(source: str, cell: CellResult | None) -> JSONDict:
    metadata: JSONDict = {}
    if cell is not None:
        metadata["nbagent"] = {
            "status": str(cell.status),
            "duration_s": round(cell.duration_s, 4),
            "tool_calls": [call.model_dump(mode="json") for call in cell.tool_calls],
        }
    return {
        "cell_type": "code",
        "id": uuid.uuid4().hex[:12],
        "metadata": metadata,
        "source": source,
        "execution_count": cell.execution_count if cell is not None else None,
        "outputs": _cell_outputs(cell) if cell is not None else [],
    }


def _quote(text: str) -> str:
    return "\n".join(f"> {line}" if line else ">" for line in text.splitlines())


def _fenced(text: str) -> str:
    fence = "````" if "```" in text else "```"
    return f"{fence}\n{text}\n{fence}"


def _step_cells(traj: Trajectory, step: Step) -> list[JSONDict]:
    action = step.action
    title = f"**Step {step.index + 1}**"
    if action.kind == "format_error":
        raw = _fenced(assistant_text(step))
        return [_markdown(f"{title}: the reply could not be run ({action.error})\n\nRaw reply:\n\n{raw}")]
    think = _markdown(f"{title}\n\n{_quote(action.think)}" if action.think else title)
    return [think, _code(action.code or "", step.cell)]


def _answer_text(answer: Any) -> str:
    if isinstance(answer, str):
        return answer
    return _fenced(json.dumps(answer, indent=2, ensure_ascii=False, default=str))


def to_notebook(traj: Trajectory, path: str | Path | None = None) -> JSONDict:
    """The episode as an nbformat 4.5 notebook, checked with `nbformat.validate`; written to `path` if given.

    Returns the notebook as a JSON dict (``nbformat.from_dict`` turns it into a ``NotebookNode``).
    """
    import nbformat

    cells = [_markdown(f"# Task\n\n{traj.task.prompt}")]
    for step in traj.steps:
        cells.extend(_step_cells(traj, step))
    last_notepad = next((s.notepad for s in reversed(traj.steps) if s.notepad), None)
    if last_notepad:
        cells.append(_markdown(f"## Notepad\n\n{_fenced(last_notepad)}"))
    if traj.final_answer is not None:
        end = f"## Answer\n\n{_answer_text(traj.final_answer)}"
    else:
        end = f"## No answer\n\nThe episode ended with `{traj.termination}`."
        if traj.termination_detail and traj.termination_detail != traj.error:
            end += f" {traj.termination_detail}"
        elif traj.error:
            end += f"\n\n{_fenced(traj.error)}"
    cells.append(_markdown(end))
    nb: JSONDict = {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
            "nbagent": {
                "trajectory_id": traj.id,
                "task_id": traj.task.id,
                "model": traj.model.model,
                "termination": str(traj.termination),
            },
        },
        "cells": cells,
    }
    nbformat.validate(nb)
    if path is not None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return nb
