"""ipykernel's kernel with less work per message: what every nbagent kernel runs.

The same `IPythonKernel` and Jupyter protocol, with six costs of ipykernel 7 and IPython removed that
py-spy found on a kernel running ``x = 6 * 7; print(x)`` cells (each a few percent of its CPU per cell;
what they save together is measured in ``benchmarks/kernel.py``):

- No shell channel thread. ipykernel 7 receives every shell message on a thread of its own that checks
  it and forwards it to the main thread over an in-process socket, and sends every reply back the same
  way: two thread hand-offs per request, which cost most when hundreds of kernels share two cores.
  That thread exists for subshells (JEP 91), which nbagent never asks for; without it the main thread
  reads the shell socket itself, ipykernel's own code path for kernels without subshells.
- The log's level is the application's. traitlets leaves the logger at DEBUG and filters in the
  handler, so each request formats half a dozen debug records that nobody sees.
- `_accepts_parameters`, which ipykernel calls with `inspect.signature` on every execute request, is
  answered once per method.
- A cell without the word ``await`` or ``async`` is not compiled a second time to learn whether it
  has a top-level ``await``.
- A cell of several lines without IPython's syntax (no ``%magic``, ``!command``, ``obj?``, pasted
  prompt, leading indent or line of only blanks: `plain_python`) skips IPython's input
  transformations, which tokenize it to leave it as it is (see ``docs/kernel.md`` for the figures).
- A flush of stdout or stderr with nothing written since the last one does not wait for a round trip
  through the IOPub thread (ipykernel flushes both before every reply).

In a kernel without debugpy (forked kernels: their template leaves it out), `IPythonKernel` does not
list every loaded module's file for a debugger it will not have. Reading them writes to about 4 MiB of
the template's shared pages, which a fork then copies; a kernel writes to many of them later anyway,
so each fork takes about 0.9 MiB less in all.

One change is a fix, not a saving: an input request (a tool call) waits until a frontend's stdin
socket has connected. A client connects its sockets when the kernel starts, before the kernel listens,
and ZMQ retries each on its own timer; the kernel's ROUTER socket drops a message to a peer that has
not connected yet, so a tool called in the first cell could be lost and the cell hang to its timeout.

Runs as a script (``python -P lean_kernel.py -f CONNECTION_FILE ...``, like ``ipykernel_launcher``)
and is imported by file in the fork template. It imports only the standard library, ipykernel, IPython
and traitlets.
"""

from __future__ import annotations

import re
import sys
import threading
import types
from typing import Any

import zmq
from ipykernel import ipkernel
from ipykernel.iostream import OutStream
from ipykernel.ipkernel import IPythonKernel
from ipykernel.kernelapp import IPKernelApp
from ipykernel.zmqshell import ZMQInteractiveShell
from IPython.core.inputtransformer2 import TransformerManager
from traitlets import DottedObjectName
from zmq.utils.monitor import recv_monitor_message

_SPECIAL_START = re.compile(r"\s*(?:[%!?,;/]|>>>|\.\.\.|In \[|\[nav\]|\[ins\])")
"""IPython's escapes (``%magic``, ``!command``, ``?obj``, ``,f a``, ``;f a``, ``/f a``) and pasted
prompts (``>>>``, ``...``, ``In [1]:``), at the start of a line."""
_SPECIAL_ASSIGN = re.compile(r"=\s*[%!]")
"""``a = %magic`` and ``a = !command``."""
_PEER_POLL_MS = 50
"""How often a kernel waiting for its stdin peer looks for a Ctrl-C (an interrupt)."""
_NO_MODULES = types.SimpleNamespace(modules={})
"""What `IPythonKernel.__init__` sees as `sys` in a kernel without a debugger: no modules to list."""
_STOCK = TransformerManager()  # type: ignore[no-untyped-call]
"""IPython's own transformations, to tell whether a shell's were changed (an extension's added)."""


def plain_python(cell: str) -> bool:
    """Whether IPython's input transformations would leave `cell` of several lines as it is: False
    wherever its syntax (escapes, ``obj?``, ``a = %magic``, pasted prompts), a leading blank line or
    indent, or a line of only blanks (which its dedent empties, in strings too) could be. One-line
    cells are False: IPython treats them apart. Lines are IPython's (`str.splitlines`: a form feed
    ends one too)."""
    lines = cell.splitlines()
    return (
        len(lines) > 1
        and not cell[0].isspace()
        and _SPECIAL_ASSIGN.search(cell) is None
        and not any(
            _SPECIAL_START.match(line) or line.rstrip().endswith("?") or (line and line.isspace())
            for line in lines
        )
    )


class _NoShellChannelThread:
    """Stands in for the shell channel thread: false, so ipykernel takes its path without one, and
    naming the main thread as the one that runs cells (read when an async cell may be interrupted)."""

    @property
    def parent_thread(self) -> threading.Thread:
        return threading.main_thread()

    def __bool__(self) -> bool:
        return False


class LeanShell(ZMQInteractiveShell):
    """`ZMQInteractiveShell` that knows a cell without the word ``await`` or ``async`` has no
    top-level ``await`` (``async for``, ``async with``) without compiling it a second time, and a
    `plain_python` cell has nothing to transform, unless transformations were added."""

    def transform_cell(self, raw_cell: str) -> str:
        manager = self.input_transformer_manager
        if (
            not self.input_transformers_post
            and manager.cleanup_transforms == _STOCK.cleanup_transforms
            and manager.line_transforms == _STOCK.line_transforms
            and manager.token_transformers == _STOCK.token_transformers
            and plain_python(raw_cell)
        ):
            return raw_cell if raw_cell.endswith("\n") else raw_cell + "\n"
        cell: str = super().transform_cell(raw_cell)  # type: ignore[no-untyped-call]
        return cell

    def should_run_async(
        self, raw_cell: str, *, transformed_cell: str | None = None, preprocessing_exc_tuple: Any = None
    ) -> bool:
        if (
            transformed_cell is not None
            and "await" not in transformed_cell
            and "async" not in transformed_cell
        ):
            return False
        answer: bool = super().should_run_async(
            raw_cell, transformed_cell=transformed_cell, preprocessing_exc_tuple=preprocessing_exc_tuple
        )
        return answer


class LeanKernel(IPythonKernel):
    """`IPythonKernel` that reads its shell socket on the main thread (no subshells), with a
    `LeanShell`."""

    shell_class = LeanShell

    def __init__(self, **kwargs: Any) -> None:
        from ipykernel import debugger  # imports debugpy where it can: after stderr is the kernel's

        if not debugger._is_debugpy_available:
            # IPythonKernel lists the files of every loaded module for its debugger.
            ipkernel.sys = _NO_MODULES  # type: ignore[attr-defined,assignment]
        try:
            super().__init__(**kwargs)  # type: ignore[no-untyped-call]
        finally:
            ipkernel.sys = sys  # type: ignore[attr-defined]
        self.shell_channel_thread = _NoShellChannelThread()
        self.stdin_monitor: zmq.Socket[bytes] | None = None
        """Events of the stdin socket's connections (set by `LeanKernelApp`; None once one connected)."""

    @property
    def _supports_kernel_subshells(self) -> bool:
        return False

    def _input_request(self, prompt: str, ident: Any, parent: Any, password: bool = False) -> str:
        self._await_stdin_peer()
        value: str = super()._input_request(prompt, ident, parent, password)
        return value

    def _await_stdin_peer(self) -> None:
        """Until a frontend's stdin socket has connected (at once after the first time)."""
        monitor = self.stdin_monitor
        if monitor is None:
            return
        while not (
            monitor.poll(_PEER_POLL_MS)
            and recv_monitor_message(monitor)["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED
        ):
            pass
        self.stdin_monitor = None
        self.stdin_socket.disable_monitor()
        monitor.close(linger=0)


class LeanOutStream(OutStream):
    """`OutStream` whose `flush` returns at once when nothing was written since the last one.

    ipykernel flushes stdout and stderr before every reply, and each flush waits for a round trip
    through the IOPub thread even when there is nothing to send. Written text always has a flush
    pending (`write` schedules one), so this skips only flushes that would send nothing.
    """

    def flush(self) -> None:
        with self._buffer_lock:
            idle = not (self._flush_pending or self._subprocess_flush_pending or self._buffers)
        if not idle:
            super().flush()  # type: ignore[no-untyped-call]


class LeanKernelApp(IPKernelApp):
    """`IPKernelApp` that starts a `LeanKernel` (no shell channel thread) with `LeanOutStream`s, and
    no debug records."""

    kernel_class = LeanKernel
    outstream_class = DottedObjectName(f"{__name__}.LeanOutStream")
    stdin_monitor: zmq.Socket[bytes] | None = None

    def _bind_socket(self, s: zmq.Socket[bytes], port: int) -> int:
        if s is self.stdin_socket:  # watched from before it listens, so no connection is missed
            self.stdin_monitor = s.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        bound: int = super()._bind_socket(s, port)  # type: ignore[no-untyped-call]
        return bound

    def init_kernel(self) -> None:
        super().init_kernel()  # type: ignore[no-untyped-call]
        self.kernel.stdin_monitor = self.stdin_monitor

    def init_control(self, context: Any) -> None:
        super().init_control(context)  # type: ignore[no-untyped-call]
        self.shell_channel_thread.io_loop.close()  # its constructor made an event loop (fds)
        self.shell_channel_thread = None

    def initialize(self, argv: list[str] | None = None) -> None:
        super().initialize(argv)  # type: ignore[no-untyped-call]
        self.log.setLevel(self.log_level)


def _memoized(accepts: Any) -> Any:
    answers: dict[tuple[Any, tuple[str, ...]], dict[str, bool]] = {}

    def accepts_parameters(meth: Any, param_names: list[str]) -> dict[str, bool]:
        key = (getattr(meth, "__func__", meth), tuple(param_names))
        if key not in answers:
            answers[key] = accepts(meth, param_names)
        return dict(answers[key])

    return accepts_parameters


if hasattr(ipkernel, "_accepts_parameters"):
    ipkernel._accepts_parameters = _memoized(ipkernel._accepts_parameters)


if __name__ == "__main__":
    LeanKernelApp.launch_instance()
