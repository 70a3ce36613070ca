"""How nbagent's kernels ask on the stdin channel (`StdinWaits`, a part of `LeanKernel`): loaded by
path, beside `lean_kernel.py`, by kernels (which import nothing of nbagent); see ``docs/kernel.md``."""

from __future__ import annotations

import logging
import sys
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

_PEER_POLL_MS = 50
"""How often a kernel waiting for its stdin peer looks for a Ctrl-C (an interrupt)."""
_REPLY_POLL_MS = 1000
"""The longest a kernel awaiting an input reply sleeps at once (an interrupt wakes it before)."""
_EOF = "\x04"
"""The reply that makes the asking code raise EOFError (ipykernel's convention)."""


class StdinWaits:
    """ipykernel's input requests, without its wake-up every 10 ms while a reply is awaited (a
    thousand kernels awaiting their tools' replies woke 100,000 times a second, taking the CPU the
    host needed to answer them): the wait blocks, and an interrupt's SIGINT ends it (pyzmq raises
    KeyboardInterrupt). The first request waits until a frontend's stdin socket has connected (ZMQ's
    ROUTER drops messages to a peer not yet there)."""

    stdin_socket: zmq.Socket[bytes]
    session: Any
    log: logging.Logger
    stdin_monitor: zmq.Socket[bytes] | None = None
    """Events of the stdin socket's connections (set by `LeanKernelApp`; None once one connected)."""

    def _input_request(self, prompt: str, ident: Any, parent: Any, password: bool = False) -> str:
        self._await_stdin_peer()
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
        socket, session = self.stdin_socket, self.session
        while socket.poll(0):  # replies to an earlier request that stopped waiting
            socket.recv_multipart()
        session.send(socket, "input_request", {"prompt": prompt, "password": password}, parent, ident=ident)
        reply: dict[str, Any] | None = None
        while reply is None:
            try:
                ready = socket.poll(_REPLY_POLL_MS)
            except KeyboardInterrupt:
                raise KeyboardInterrupt("Interrupted by user") from None  # without this wait's frames
            if not ready:
                continue
            try:
                reply = session.recv(socket)[1]
            except Exception:  # a bad signature or garbled frames: not the host's reply
                self.log.warning("an invalid input reply was dropped", exc_info=True)
        value = reply.get("content", {}).get("value", "")
        if value == _EOF:
            raise EOFError
        return str(value)

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
