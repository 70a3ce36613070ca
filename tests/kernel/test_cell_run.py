"""How a cell's messages are matched and when a cell counts as finished (unit tests of message logic)."""

from __future__ import annotations

from typing import Any

from nbagent.kernel.cell import _IDLE_GRACE_S, CellRun
from nbagent.kernel.outputs import OutputCollector
from nbagent.trajectory import StreamOutput


def _msg(parent: str, msg_type: str, content: dict[str, Any]) -> dict[str, Any]:
    return {"parent_header": {"msg_id": parent}, "header": {"msg_type": msg_type}, "msg_type": msg_type,
            "content": content}  # fmt: skip


def test_messages_of_other_requests_are_ignored() -> None:
    run = CellRun("mine", OutputCollector(1000), last_activity=0.0)
    run.on_iopub(_msg("other", "stream", {"name": "stdout", "text": "stale"}))
    run.on_shell(_msg("other", "execute_reply", {"status": "ok"}))
    run.on_iopub(_msg("mine", "execute_input", {"execution_count": 7}))
    run.on_iopub(_msg("mine", "stream", {"name": "stdout", "text": "fresh"}))
    assert run.collector.outputs() == [StreamOutput(name="stdout", text="fresh")]
    assert run.execution_count == 7
    assert run.reply is None


def test_finished_needs_the_reply_and_idle() -> None:
    run = CellRun("mine", OutputCollector(1000), last_activity=0.0)
    run.on_iopub(_msg("mine", "status", {"execution_state": "idle"}))
    assert not run.finished(now=1e9)  # idle alone is not enough: the reply carries the status
    run.on_shell(_msg("mine", "execute_reply", {"status": "ok"}))
    assert run.finished(now=run.last_activity)


def test_a_dropped_idle_does_not_hang_the_cell() -> None:
    run = CellRun("mine", OutputCollector(1000), last_activity=0.0)
    run.on_shell(_msg("mine", "execute_reply", {"status": "ok"}))
    replied = run.last_activity
    assert not run.finished(now=replied + _IDLE_GRACE_S / 2)
    assert run.finished(now=replied + _IDLE_GRACE_S)
