"""ipykernel's kernel with less work per message and per kernel: what every nbagent kernel runs.

The same `IPythonKernel` and Jupyter protocol, less costs that py-spy and the kernels' memory showed
(each explained and measured in ``docs/kernel.md``, "The kernel process"): no shell channel thread
(no subshells); the log's level is the application's; `_accepts_parameters` answered once per
method; no second compile of a cell without ``await``/``async``; no static input transformations
for a cell without IPython's syntax (`plain_python`; one-line cells keep the dynamic ones); IOPub
messages sent at once on the sending thread and flushes on the asking thread (`LeanIOPubThread`,
`LeanOutStream`, one lock for every use of the socket, the descriptors' pipe read first); the
heartbeat on the kernel's ZMQ context and the descriptors' pipes read by the IOPub thread's loop
(6 threads, not 10); in a fork of a template, options parsed once by the template
(`LeanKernelApp.prepare`) and, without debugpy, no debugger's sockets nor list of every module's
file; an input reply awaited without a wake-up every 10 ms (`StdinWaits`). Two fixes: an input
request waits until a frontend's stdin socket has connected (ZMQ's ROUTER drops messages to a peer
not yet there), and a shutdown request ends the process (ipykernel's clean-up waits for every socket
of the context, the stdin watch's too).

Runs as a script (``python -P lean_kernel.py -f CONNECTION_FILE ...``, like ``ipykernel_launcher``)
and is imported by file in the fork template. It imports only the standard library, ipykernel, IPython
and traitlets.
"""

from __future__ import annotations

import contextvars
import importlib.util
import logging
import os
import sys
import threading
import types
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import zmq
from ipykernel import ipkernel, kernelapp
from ipykernel.control import ControlThread
from ipykernel.heartbeat import Heartbeat
from ipykernel.iostream import IOPubThread, OutStream
from ipykernel.ipkernel import IPythonKernel
from ipykernel.kernelapp import IPKernelApp
from traitlets import DottedObjectName
from zmq.eventloop.zmqstream import ZMQStream

_NO_MODULES = types.SimpleNamespace(modules={})
"""What `IPythonKernel.__init__` sees as `sys` in a kernel without a debugger: no modules to list."""
_PIPE_READ = 65536
"""Bytes read from a stream's file-descriptor pipe at once: a Linux pipe's capacity."""
_pid = os.getpid()
"""This process's id, kept by a fork hook: ipykernel asks `os.getpid` (a system call) a few times per
message to learn whether it runs in a forked subprocess."""


def _sibling(name: str) -> types.ModuleType:
    """The module `name` beside this file, loaded by path as ``_nbagent_<name>`` (a kernel imports
    nothing of nbagent, and a fork template loads this file by path too)."""
    spec = importlib.util.spec_from_file_location(f"_nbagent_{name}", Path(__file__).with_name(f"{name}.py"))
    assert spec is not None
    assert spec.loader is not None
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


if TYPE_CHECKING or __package__:  # imported as nbagent.kernel.lean_kernel (tests, tools)
    from nbagent.kernel.lean_shell import LeanShell, plain_python
    from nbagent.kernel.lean_stdin import StdinWaits
else:  # a kernel: this file runs as a script, or a fork template loaded it by path
    _shell = _sibling("lean_shell")
    LeanShell, plain_python = _shell.LeanShell, _shell.plain_python
    StdinWaits = _sibling("lean_stdin").StdinWaits


def _note_pid() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_note_pid)


class _NoShellChannelThread:
    """Stands in for the shell channel thread: false, so ipykernel takes its path without one, and
    naming the main thread as the one that runs cells (read when an async cell may be interrupted)."""

    @property
    def parent_thread(self) -> threading.Thread:
        return threading.main_thread()

    def __bool__(self) -> bool:
        return False


class LeanKernel(StdinWaits, IPythonKernel):
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

    @property
    def _supports_kernel_subshells(self) -> bool:
        return False


class _ForkAware:
    """Learns whether it runs in the process that made it from `_pid`, not a system call."""

    _master_pid: int

    def _is_master_process(self) -> bool:
        return _pid == self._master_pid


class _LockedStream(ZMQStream):
    """`ZMQStream` that handles its socket's events holding `lock`."""

    def __init__(self, socket: zmq.Socket[bytes], io_loop: Any, lock: threading.RLock) -> None:
        self._lock = lock
        super().__init__(socket, io_loop)

    def _handle_events(self, fd: Any, events: int) -> None:
        with self._lock:
            super()._handle_events(fd, events)  # type: ignore[no-untyped-call]


class LeanIOPubThread(_ForkAware, IOPubThread):
    """`IOPubThread` that sends a message of its process at once, on the calling thread, holding
    `socket_lock`, which every use of the socket holds. Its thread still reads the socket's
    subscriptions (to welcome them), runs the streams' timed flushes and relays what forked
    subprocesses send; where it is not running (before its start, after its stop, in a forked
    subprocess), ipykernel's way is kept."""

    def __init__(self, socket: zmq.Socket[bytes], pipe: bool = False, session: Any = False) -> None:
        self.socket_lock = threading.RLock()
        super().__init__(socket, pipe=pipe, session=session)  # type: ignore[no-untyped-call]

    @property
    def direct(self) -> bool:
        """Whether a message of the calling thread goes out at once."""
        return bool(self.thread.is_alive()) and self._is_master_process()

    def _setup_xpub_listener(self) -> None:
        self._xpub_stream = _LockedStream(self.socket, self.io_loop, self.socket_lock)
        self._xpub_stream.on_recv(self._handle_subscription)

    def send_multipart(self, *args: Any, **kwargs: Any) -> None:
        if not self.direct:
            super().send_multipart(*args, **kwargs)  # type: ignore[no-untyped-call]
            return
        with self.socket_lock:
            self._really_send(*args, **kwargs)  # type: ignore[no-untyped-call]
            # A send takes the socket's pending events, so its descriptor may not signal a
            # subscription that came in meanwhile: hand that to the thread.
            if not self.closed and self.socket.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                self.io_loop.add_callback(self._xpub_stream._handle_events, self.socket, 0)


class LeanOutStream(_ForkAware, OutStream):
    """`OutStream` that, on a `LeanIOPubThread`, flushes on the thread that asks: it forwards what
    the file-descriptor pipe holds, then sends the text (if any) holding the socket's lock, so
    nothing written before a flush is left behind it and no other flush's text passes it."""

    pub_thread: LeanIOPubThread

    def _setup_stream_redirects(self, name: str) -> None:
        # ipykernel's redirection of the stream's file descriptor to a pipe, which the IOPub thread's
        # event loop reads instead of a thread of its own per stream: two threads fewer per kernel.
        self._pipe_lock = threading.Lock()
        read_end, write_end = os.pipe()
        fd = self._original_stdstream_fd = getattr(sys, name).fileno()
        self._original_stdstream_copy = os.dup(fd)
        os.dup2(write_end, fd)
        os.close(write_end)
        os.set_blocking(read_end, False)
        self._fid = read_end
        self._exc = None
        self._io_loop.add_callback(self._io_loop.add_handler, read_end, self._pipe_ready, self._io_loop.READ)

    @property
    def _pipe(self) -> int:
        """The read end of the pipe that the stream's file descriptor writes to."""
        return cast(int, self._fid)

    def _pipe_ready(self, fd: int, events: int) -> None:
        # In a context of its own, as in a thread: the text goes to the cell that runs now.
        if not contextvars.Context().run(self._forward_pipe):
            self._io_loop.remove_handler(fd)

    def close(self) -> None:
        if self._should_watch:
            self._should_watch = False
            os.dup2(self._original_stdstream_copy, self._original_stdstream_fd)
            os.close(self._original_stdstream_copy)
        self.pub_thread = None  # type: ignore[assignment]

    def _forward_pipe(self) -> bool:
        """Write what the pipe holds now (one read: at most its capacity) to this stream and to the
        original descriptor, as ipykernel's watcher does; False once the pipe closed or the stream
        stopped watching."""
        with self._pipe_lock:
            try:
                data = os.read(self._pipe, _PIPE_READ)
            except BlockingIOError:
                return True
            if not data or not self._should_watch:
                return False
            self.write(data.decode(errors="replace"))
            os.write(self._original_stdstream_copy, data)
            return True

    def _direct(self) -> bool:
        return isinstance(self.pub_thread, LeanIOPubThread) and self.pub_thread.direct

    def flush(self) -> None:
        if not self._direct():
            super().flush()  # type: ignore[no-untyped-call]
            return
        if self._fid is not None:
            self._forward_pipe()
        with self._buffer_lock:
            written = bool(self._buffers)
        if written:
            self._flush()

    def _flush(self) -> None:
        with self.pub_thread.socket_lock if self._direct() else nullcontext():
            super()._flush()  # type: ignore[no-untyped-call]


def _has_no_debugger() -> bool:
    """Whether this process already knows it has no debugger: ipykernel looked for debugpy when a
    fork template imported it, and found none (launched kernels look later, in `LeanKernel`)."""
    debugger = sys.modules.get("ipykernel.debugger")
    return debugger is not None and not getattr(debugger, "_is_debugpy_available", True)


def _stream(socket: zmq.Socket[bytes] | None, *args: Any) -> ZMQStream | None:
    """`ZMQStream`, or None for a socket the kernel does without (the debugger's)."""
    return None if socket is None else ZMQStream(socket, *args)


def _without_debugger_notice(record: logging.LogRecord) -> bool:
    """Drops ipykernel's warning that a kernel without the debugger's socket will not debug (by
    design here; the kernel's log is what errors quote)."""
    return not record.getMessage().startswith("debugpy_stream undefined")


class LeanKernelApp(IPKernelApp):
    """`IPKernelApp` that starts a `LeanKernel` (no shell channel thread) with a `LeanIOPubThread`
    and `LeanOutStream`s, no debug records, the heartbeat on the kernel's ZMQ context and, in a
    fork of a template, options parsed once in the template (`prepare`) and no debugger's sockets."""

    kernel_class = LeanKernel
    outstream_class = DottedObjectName(f"{__name__}.LeanOutStream")
    stdin_monitor: zmq.Socket[bytes] | None = None
    options_parsed = False
    """Whether `prepare` parsed the options: `initialize` leaves them as they are."""

    @classmethod
    def prepare(cls, argv: list[str]) -> None:
        """Create the application and parse its options `argv` (no connection file), in a fork
        template: each fork then sets its `connection_file` and calls `initialize()`. The parser
        traitlets builds for every option of every class is about 0.8 MiB of each fork's memory."""
        app = cls.instance()
        app.parse_command_line(argv)
        app.options_parsed = True

    def parse_command_line(self, argv: list[str] | None = None) -> None:
        if not self.options_parsed:
            super().parse_command_line(argv)

    def _bind_socket(self, s: zmq.Socket[bytes], port: int) -> int:
        if s is self.stdin_socket:  # watched from before it listens, so no connection is missed
            self.stdin_monitor = s.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        bound: int = super()._bind_socket(s, port)  # type: ignore[no-untyped-call]
        return bound

    def init_control(self, context: Any) -> None:
        if not _has_no_debugger():
            super().init_control(context)  # type: ignore[no-untyped-call]
            self.shell_channel_thread.io_loop.close()  # its constructor made an event loop (fds)
            self.shell_channel_thread = None
            return
        # ipykernel's control channel without the debugger's two sockets (one of them connected to
        # the shell socket: 0.2 MiB of a forked kernel's memory) and without a shell channel thread.
        self.control_socket = socket = context.socket(zmq.ROUTER)
        socket.linger = 1000
        socket.router_handover = 1
        self._apply_curve_server_options(socket)
        self.control_port = self._bind_socket(socket, self.control_port)
        self.debugpy_socket = self.debug_shell_socket = None
        self.control_thread = ControlThread(daemon=True)  # type: ignore[no-untyped-call]
        self.shell_channel_thread = None

    def init_heartbeat(self) -> None:
        # ipykernel gives the heartbeat a ZMQ context of its own, against libzmq taking the GIL to
        # free zero-copy messages; pyzmq frees them without it (a C callback signals its collector
        # thread), so the kernel's context serves it too: two threads (I/O and reaper) fewer.
        self.heartbeat = Heartbeat(  # type: ignore[no-untyped-call]
            self.context,
            (self.transport, self.ip, self.hb_port),
            curve_publickey=self.curve_publickey,
            curve_secretkey=self.curve_secretkey,
        )
        self.hb_port = self.heartbeat.port
        self.heartbeat.start()

    def init_iopub(self, context: Any) -> None:
        kernelapp.IOPubThread = LeanIOPubThread  # type: ignore[attr-defined]
        try:
            super().init_iopub(context)  # type: ignore[no-untyped-call]
        finally:
            kernelapp.IOPubThread = IOPubThread  # type: ignore[attr-defined]

    def init_kernel(self) -> None:
        if self.debugpy_socket is None:
            self.log.addFilter(_without_debugger_notice)
        kernelapp.ZMQStream = _stream  # type: ignore[attr-defined,assignment]
        try:
            super().init_kernel()  # type: ignore[no-untyped-call]
        finally:
            kernelapp.ZMQStream = ZMQStream  # type: ignore[attr-defined]
        self.kernel.stdin_monitor = self.stdin_monitor

    def initialize(self, argv: list[str] | None = None) -> None:
        super().initialize(argv)  # type: ignore[no-untyped-call]
        self.log.setLevel(self.log_level)

    def close(self) -> None:
        # ipykernel ends by terminating the kernel's ZMQ context, which waits until every socket of it
        # is closed: the stdin monitor's too (open until a frontend's stdin socket connects). The
        # heartbeat's socket closes when that termination stops it (ipykernel would terminate the
        # heartbeat's context first, which is now the kernel's, and wait forever).
        monitor = self.kernel.stdin_monitor if self.kernel else self.stdin_monitor
        if monitor is not None and not monitor.closed:
            self.stdin_socket.disable_monitor()
            monitor.close(linger=0)
        self.heartbeat = None
        super().close()  # type: ignore[no-untyped-call]


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
