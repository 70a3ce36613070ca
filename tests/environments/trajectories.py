"""Hand-built trajectories for scoring tests."""

from __future__ import annotations

from typing import Any

from nbagent.trajectory import (
    Action,
    CellResult,
    CellStatus,
    ModelCall,
    ModelInfo,
    Step,
    TaskSpec,
    Termination,
    Trajectory,
)


def step(
    index: int,
    think: str | None,
    code: str | None,
    status: CellStatus | None = CellStatus.OK,
    *,
    format_error: bool = False,
) -> Step:
    """A step; `status` None means no cell ran (e.g. after a format error)."""
    action = (
        Action(kind="format_error", think=think, error="no code block")
        if format_error
        else Action(kind="code", think=think, code=code)
    )
    cell = CellResult(code=code or "", status=status) if status is not None else None
    call = ModelCall(messages=[{"role": "user", "content": "q"}], completion=f"{think}{code}")
    return Step(index=index, model_call=call, action=action, cell=cell)


def trajectory(task: TaskSpec, steps: list[Step], final_answer: Any, **kw: Any) -> Trajectory:
    return Trajectory(
        task=task,
        model=ModelInfo(provider="scripted", model="hand"),
        steps=steps,
        final_answer=final_answer,
        termination=kw.pop("termination", Termination.SUBMITTED),
        **kw,
    )
