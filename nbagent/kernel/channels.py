"""A kernel's channels, read without pyzmq's asyncio layer: the host's cost per message.

Kernel clients (`client`) have plain ZMQ sockets. `Readable` wakes a coroutine when any of a few of
them may have messages: it watches each socket's ``zmq.FD`` in the event loop, which signals that the
socket's state changed, not that a message waits, so every wake-up is followed by `drain`, which
receives until none is left. One watch per cell replaces the futures pyzmq's asyncio poller makes on
every poll and the handler its asyncio sockets keep in the loop (see ``docs/kernel.md``).
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import os
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, cast

import zmq
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.session import Session

from nbagent.errors import KernelError

_FIRST_ASK_S = 0.05
"""How long after the first kernel_info request of a starting kernel the next is sent."""
_ASK_EVERY_S = 1.0
"""The longest interval between kernel_info requests of a starting kernel (it doubles up to this)."""
_MAX_SOCKETS = 65536
"""Sockets of one context: four per kernel client (ZMQ's default, 1023, stops at about 250 kernels)."""


def new_context() -> zmq.Context[Any]:
    """A ZMQ context for the clients of many kernels (a context per client would mean a thread per
    kernel in the host, and a blocking clean-up of each when it is dropped)."""
    context: zmq.Context[Any] = zmq.Context()
    context.set(zmq.MAX_SOCKETS, _MAX_SOCKETS)
    return context


def shared_context() -> zmq.Context[Any]:
    """This process's context for kernel clients (`new_context`; a forked child gets its own)."""
    return _context_of(os.getpid())


@functools.cache
def _context_of(pid: int) -> zmq.Context[Any]:
    return new_context()


def client(connection_file: str, context: zmq.Context[Any]) -> BlockingKernelClient:
    """A client of the kernel of `connection_file`, its channels started (no heartbeat: a kernel's
    death shows in its process). Its sockets are plain; read them with `Readable` and `drain`."""
    kc = BlockingKernelClient(connection_file=connection_file, context=context)
    kc.load_connection_file()
    kc.start_channels(hb=False)
    return kc


class Readable:
    """While open (``with``), `wait` returns when one of `sockets` may have messages."""

    def __init__(self, sockets: Iterable[zmq.Socket[bytes]]) -> None:
        self._loop = asyncio.get_running_loop()
        self._ready = asyncio.Event()
        self._fds = [cast(int, socket.get(zmq.FD)) for socket in sockets]

    def __enter__(self) -> Readable:
        for fd in self._fds:
            self._loop.add_reader(fd, self._ready.set)
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        for fd in self._fds:
            self._loop.remove_reader(fd)

    def wake(self) -> None:
        """Make the next `wait` return at once (after a send on a watched socket, which may have
        consumed the signal of a message that arrived)."""
        self._ready.set()

    async def wait(self, timeout_s: float) -> bool:
        """Until a socket may have messages or `wake` was called (True), or `timeout_s` passed."""
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            self._ready.set()

        if not self._ready.is_set():
            timer = self._loop.call_later(timeout_s, expire)
            try:
                await self._ready.wait()
            finally:
                timer.cancel()
        self._ready.clear()
        return not expired


def drain(socket: zmq.Socket[bytes], session: Session) -> list[dict[str, Any]]:
    """Every message waiting on `socket`, received without waiting."""
    messages: list[dict[str, Any]] = []
    while cast(int, socket.get(zmq.EVENTS)) & zmq.POLLIN:
        messages.append(decode(socket.recv_multipart(zmq.NOBLOCK), session))
    return messages


def decode(frames: list[bytes], session: Session) -> dict[str, Any]:
    """The parts of a Jupyter message nbagent reads, signature checked. Lighter than
    `Session.deserialize`, which also turns every date string of the headers into a datetime."""
    parts = cast(list[bytes], session.feed_identities(frames)[1])  # copied frames: bytes
    if len(parts) < 5:
        raise KernelError(f"malformed message from the kernel: {len(parts)} frames")
    if session.auth is not None and not hmac.compare_digest(parts[0], session.sign(parts[1:5])):
        raise KernelError("a message from the kernel has an invalid signature")
    header = session.unpack(parts[1])
    return {
        "header": header,
        "msg_type": header["msg_type"],
        "parent_header": session.unpack(parts[2]),
        "content": session.unpack(parts[4]),
    }


async def wait_ready(kc: BlockingKernelClient, *, timeout_s: float, alive: Callable[[], bool]) -> bool:
    """Whether the kernel answered a kernel_info request on the shell channel and its output channel
    carried a status of one (so no output of the first cell can be missed) within `timeout_s`; False
    at once when `alive` says the process ended. A request sent before the kernel listened may be
    lost: it is sent again, less and less often."""
    deadline = time.monotonic() + timeout_s
    shell, iopub = kc.shell_channel.socket, kc.iopub_channel.socket
    asked: set[str] = set()
    replied = published = False
    next_ask, every = time.monotonic(), _FIRST_ASK_S
    with Readable([shell, iopub]) as readable:
        while True:
            replied = replied or any(_answers(msg, asked) for msg in drain(shell, kc.session))
            published = published or any(_answers(msg, asked) for msg in drain(iopub, kc.session))
            if replied and published:
                return True
            now = time.monotonic()
            if not alive() or now > deadline:
                return False
            if now >= next_ask:
                asked.add(kc.kernel_info())
                next_ask, every = now + every, min(2 * every, _ASK_EVERY_S)
                readable.wake()  # the send may have taken a wake-up of the shell socket
            await readable.wait(max(0.0, min(next_ask, deadline) - now))


def _answers(msg: dict[str, Any], asked: set[str]) -> bool:
    return msg["parent_header"].get("msg_id") in asked
