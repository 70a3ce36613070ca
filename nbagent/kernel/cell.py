"""One cell in flight: its messages read from the kernel's channels until it ends, and its result.

`follow` reads the shell, iopub and stdin channels of a kernel process for one cell, interrupts the
cell at its deadline, and stops early when the kernel dies or does not come back from the interrupt;
`cell_result` turns a cell that ended with its reply into a `CellResult`. What to do about a kernel
that died or hung is up to the `Kernel`.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass
from typing import Any

from nbagent.kernel.channels import Readable, drain
from nbagent.kernel.outputs import OutputCollector
from nbagent.kernel.process import ProcessHandle
from nbagent.kernel.stdin import InputAnswers
from nbagent.trajectory import CellResult, CellStatus, ErrorOutput

_ALIVE_CHECK_S = 0.1
"""How often a silent kernel is checked for death while a cell runs."""
_IDLE_GRACE_S = 3.0
"""After the reply, how long a silent output channel is waited on for the (possibly dropped) idle."""


class CellEnd(enum.Enum):
    """How `follow` stopped."""

    REPLIED = "replied"
    """The reply came (after an interrupt, when `CellRun.interrupted`)."""
    STUCK = "stuck"
    """The cell was interrupted at its deadline and did not stop within the grace period."""
    DIED = "died"
    """The kernel process died."""


@dataclass
class CellRun:
    """What has come back so far for one cell (messages of other requests are ignored)."""

    msg_id: str
    collector: OutputCollector
    last_activity: float
    reply: dict[str, Any] | None = None
    idle: bool = False
    execution_count: int | None = None
    interrupted: bool = False
    """Whether the cell ran past its deadline and was interrupted."""

    def on_iopub(self, msg: dict[str, Any]) -> None:
        if msg["parent_header"].get("msg_id") != self.msg_id:
            return
        self.last_activity = time.monotonic()
        msg_type, content = msg["header"]["msg_type"], msg["content"]
        if msg_type == "status":
            self.idle = self.idle or content.get("execution_state") == "idle"
        elif msg_type == "execute_input":
            self.execution_count = content.get("execution_count")
        else:
            self.collector.add(msg_type, content)

    def on_shell(self, msg: dict[str, Any]) -> None:
        if msg["parent_header"].get("msg_id") == self.msg_id and msg["msg_type"] == "execute_reply":
            self.reply = msg["content"]
            self.last_activity = time.monotonic()

    def finished(self, now: float) -> bool:
        """Done at the reply and the idle status; without idle (dropped when the kernel's output queue
        overflows), once the output has been quiet for a while since the reply."""
        if self.reply is None:
            return False
        return self.idle or now - self.last_activity >= _IDLE_GRACE_S


async def follow(
    process: ProcessHandle, run: CellRun, answers: InputAnswers | None, *, deadline: float, grace_s: float
) -> CellEnd:
    """Read `run`'s messages until it finishes, interrupting it at `deadline` (monotonic time) and
    giving it `grace_s` more to stop. `answers` answers its input requests (None: stdin is not read)."""
    kc = process.client
    iopub, shell, stdin = kc.iopub_channel.socket, kc.shell_channel.socket, kc.stdin_channel.socket
    interrupted_at: float | None = None
    with Readable([iopub, shell] if answers is None else [iopub, shell, stdin]) as readable:
        if answers is not None:
            answers.on_sent = readable.wake
        while True:
            for msg in drain(iopub, kc.session):
                run.on_iopub(msg)
            for msg in drain(shell, kc.session):
                run.on_shell(msg)
            if answers is not None:
                for msg in drain(stdin, kc.session):
                    if msg["msg_type"] == "input_request":
                        answers.answer(msg["content"])
            now = time.monotonic()
            if run.finished(now):
                return CellEnd.REPLIED
            if interrupted_at is None and now >= deadline:
                interrupted_at = now
                run.interrupted = True
                await process.interrupt()
                continue
            limit = deadline if interrupted_at is None else interrupted_at + grace_s
            if interrupted_at is not None and now >= limit:
                return CellEnd.STUCK
            if not await readable.wait(min(_ALIVE_CHECK_S, limit - now)) and not process.alive:
                return CellEnd.DIED


def cell_result(code: str, started: float, run: CellRun, timed_out: float | None) -> CellResult:
    """The result of a cell that ended with its reply; `timed_out`: its timeout, when it was interrupted."""
    reply = run.reply
    assert reply is not None
    outputs = run.collector.outputs()
    status = CellStatus.OK if reply.get("status") == "ok" else CellStatus.ERROR
    note = None
    if status is CellStatus.ERROR and not any(isinstance(o, ErrorOutput) for o in outputs):
        ename = str(reply.get("ename", "Error"))
        if reply.get("status") == "aborted":
            ename, note = "ExecutionAborted", "The kernel aborted this cell without running it."
        outputs.append(
            ErrorOutput(
                ename=ename,
                evalue=str(reply.get("evalue", "")),
                traceback=[str(line) for line in reply.get("traceback", [])],
            )
        )
    if timed_out is not None:
        status = CellStatus.TIMEOUT
        note = (
            f"The cell ran past its timeout of {timed_out:g} s and was interrupted; "
            "the kernel's variables are kept."
        )
    if not run.idle:
        note = join_notes(
            note, "The kernel's output channel overflowed: some of this cell's output may be missing."
        )
    return CellResult(
        code=code,
        status=status,
        outputs=outputs,
        execution_count=reply.get("execution_count", run.execution_count),
        duration_s=time.monotonic() - started,
        note=join_notes(note, run.collector.dropped_note()),
    )


def join_notes(*notes: str | None) -> str | None:
    """The notes that are set, joined into one (None when none is)."""
    return " ".join(note for note in notes if note) or None
