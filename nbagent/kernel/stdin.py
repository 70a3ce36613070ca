"""The kernel's stdin channel: its ``input_request`` messages, answered by the host's `InputHandler`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from jupyter_client.client import KernelClient

InputHandler = Callable[[str, bool], Awaitable[str]]
"""Answers an ``input_request`` of the kernel: gets (prompt, password), returns the reply text."""

log = logging.getLogger("nbagent.kernel")

EOF_REPLY = "\x04"
"""An input_reply of this value makes ipykernel raise EOFError in the kernel."""
_CANCEL_WAIT_S = 1.0


class InputAnswers:
    """The answers to one cell's input requests, each computed by `handler` in a task of its own."""

    def __init__(self, kc: KernelClient, handler: InputHandler) -> None:
        self._kc = kc
        self._handler = handler
        self._tasks: set[asyncio.Task[None]] = set()
        self.on_sent: Callable[[], None] | None = None
        """Called after each reply is sent (the reader of the stdin channel wakes: see `Readable.wake`)."""

    def answer(self, request: dict[str, Any]) -> None:
        """Start answering the content of an ``input_request``."""
        task = asyncio.create_task(self._answer(request))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def cancel(self) -> None:
        """Cancel the answers still being computed, and give their handlers a moment to record it."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:  # a sync tool in a thread cannot be stopped
            await asyncio.wait(list(self._tasks), timeout=_CANCEL_WAIT_S)

    async def _answer(self, request: dict[str, Any]) -> None:
        try:
            value = await self._handler(str(request.get("prompt", "")), bool(request.get("password", False)))
        except Exception:
            log.exception("the input handler failed; the kernel gets EOFError")
            value = EOF_REPLY
        self._kc.input(value)
        if self.on_sent is not None:
            self.on_sent()
