"""`MCPConnection`: the client session of one MCP server, on an event loop of its own in a daemon thread.

Agents are built in many places (the CLI, `collect` factories, Ray actors, notebooks), with or without an
event loop running; keeping the session on its own loop lets any of them start it synchronously and call
it from any thread or loop. The session is opened on `start`, a server that stops is started again once
(on the next call), each call has a time limit, and `close` ends the session and the server process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
from anyio.abc import ObjectReceiveStream
from mcp import Client, MCPError
from mcp.client import Transport
from mcp_types import CONNECTION_CLOSED, CallToolResult
from mcp_types import Tool as ToolSpec

from nbagent.errors import ToolError

log = logging.getLogger("nbagent.tools.mcp")

T = TypeVar("T")
TransportFactory = Callable[[], Transport]
_CLOSE_S = 10.0


class MCPServerError(ToolError):
    """An MCP server did not start, stopped, or did not answer in time; the message names it and why."""


class MCPConnection:
    """The MCP session of one server, shared by every caller, with one restart and per-call time limits.

    Args:
        name: The server's name in messages.
        transport: Opens a fresh transport (the server's streams) for each start.
        last_words: What the server last said about itself (its stderr, an HTTP status), for messages.
        start_timeout_s: Limit for starting the server and listing its tools.
        call_timeout_s: Limit for one tool call.
    """

    def __init__(
        self,
        name: str,
        transport: TransportFactory,
        *,
        last_words: Callable[[], str],
        start_timeout_s: float,
        call_timeout_s: float,
    ) -> None:
        self.name = name
        self._transport = transport
        self._last_words = last_words
        self._start_timeout_s = start_timeout_s
        self._call_timeout_s = call_timeout_s
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        # on the loop:
        self._client: Client | None = None
        self._ended: asyncio.Event | None = None  # the server's stream ended (it stopped)
        self._stop: asyncio.Event | None = None  # ends the session task
        self._session: asyncio.Task[None] | None = None
        self._restarted = False
        self._reconnecting: asyncio.Lock | None = None

    # ---------------------------------------------------------------------------------------------
    # From any thread
    # ---------------------------------------------------------------------------------------------

    def start(self) -> list[ToolSpec]:
        """Start the server and list its tools; `MCPServerError` in one line if it does not start."""
        return self._submit(self._open(list_tools=True)).result()

    async def call(self, tool: str, arguments: dict[str, Any]) -> CallToolResult:
        """Call `tool` on the server from any event loop (a cancelled caller cancels the call)."""
        return await asyncio.wrap_future(self._submit(self._call(tool, arguments)))

    def close(self) -> None:
        """End the session and the server, then the thread. Later calls raise `MCPServerError`."""
        with self._lock:
            self._closed = True
            loop, thread, self._loop = self._loop, self._thread, None
        if loop is None or thread is None:
            return
        if thread is threading.current_thread():  # garbage collected on the loop itself: do not wait
            loop.create_task(self._shutdown(loop))
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(loop), loop).result(_CLOSE_S)
        except (concurrent.futures.TimeoutError, RuntimeError):
            log.warning("MCP server %r did not stop within %g s", self.name, _CLOSE_S)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(_CLOSE_S)
        if not thread.is_alive():
            loop.close()

    def _submit(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        with self._lock:
            if self._closed:
                coroutine.close()
                raise MCPServerError(f"MCP server {self.name!r} is closed; create a new MCPServer to use it")
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=self._loop.run_forever, name=f"nbagent-mcp-{self.name}", daemon=True
                )
                self._thread.start()
            return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    # ---------------------------------------------------------------------------------------------
    # On the connection's loop
    # ---------------------------------------------------------------------------------------------

    def _error(self, text: str) -> MCPServerError:
        """`MCPServerError` naming the server, saying `text` and what the server last said."""
        words = self._last_words()
        return MCPServerError(f"MCP server {self.name!r} {text}" + (f" ({words})" if words else ""))

    async def _open(self, *, list_tools: bool) -> list[ToolSpec]:
        ended, stop = asyncio.Event(), asyncio.Event()
        client = Client(_watched(self._transport(), ended))
        ready = asyncio.get_running_loop().create_future()
        session = asyncio.create_task(self._hold(client, ready, stop))
        try:
            async with asyncio.timeout(self._start_timeout_s):
                await ready
                tools = await _list_tools(client) if list_tools else []
        except (Exception, asyncio.CancelledError) as exc:
            stop.set()
            session.cancel()
            await asyncio.gather(session, return_exceptions=True)
            if isinstance(exc, TimeoutError):
                raise self._error(f"did not answer within {self._start_timeout_s:g} s") from None
            if isinstance(exc, Exception):
                raise self._error(f"did not start: {_reason(exc)}") from None
            raise
        self._client, self._ended, self._stop, self._session = client, ended, stop, session
        return tools

    async def _hold(self, client: Client, ready: asyncio.Future[None], stop: asyncio.Event) -> None:
        """Keep `client` open until `stop` (the transport's task groups live in this one task)."""
        try:
            async with client:
                ready.set_result(None)
                await stop.wait()
        except Exception as exc:
            if not ready.done():
                ready.set_exception(exc)
            log.debug("the session of MCP server %r ended: %r", self.name, exc)

    async def _drop(self) -> None:
        """Close the current session (and so stop the server's process)."""
        session, self._client = self._session, None
        if self._stop is not None:
            self._stop.set()
        if session is not None:
            try:
                await asyncio.wait_for(session, _CLOSE_S)
            except (Exception, asyncio.CancelledError):
                log.debug("closing MCP server %r failed", self.name, exc_info=True)

    async def _shutdown(self, loop: asyncio.AbstractEventLoop) -> None:
        """Stop the server (calls in flight fail with `MCPServerError`), cancel what is left, stop `loop`."""
        await self._drop()
        left = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in left:
            task.cancel()
        await asyncio.gather(*left, return_exceptions=True)
        loop.call_soon(loop.stop)

    async def _live_client(self) -> Client:
        """The open client; a server that stopped is started again, once in the connection's life."""
        self._reconnecting = self._reconnecting or asyncio.Lock()
        async with self._reconnecting:
            if self._client is not None and self._ended is not None and self._ended.is_set():
                await self._drop()
            if self._client is not None:
                return self._client
            if self._restarted:
                raise self._error("is down and was restarted once already; check the server")
            self._restarted = True
            log.warning("MCP server %r stopped; starting it again", self.name)
            await self._open(list_tools=False)
            assert self._client is not None
            return self._client

    async def _call(self, tool: str, arguments: dict[str, Any]) -> CallToolResult:
        client = await self._live_client()
        ended = self._ended
        try:
            async with asyncio.timeout(self._call_timeout_s):  # cheaper than the SDK's read timeout
                return await client.call_tool(tool, arguments)
        except TimeoutError:
            raise MCPServerError(
                f"MCP server {self.name!r} did not answer {tool}() within {self._call_timeout_s:g} s"
            ) from None
        except MCPError as exc:
            if exc.code != CONNECTION_CLOSED:
                raise
            await anyio.lowlevel.checkpoint()  # let the end of the server's stream land
            if ended is None or not ended.is_set():
                raise
            again = "it was restarted once already" if self._restarted else "the next call starts it again"
            raise self._error(f"stopped during {tool}(); {again}") from None


async def _list_tools(client: Client) -> list[ToolSpec]:
    tools: list[ToolSpec] = []
    cursor: str | None = None
    while True:
        page = await client.list_tools(cursor=cursor)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if cursor is None:
            return tools


class _Watched(ObjectReceiveStream[Any]):
    """A server's read stream that sets `ended` when the stream ends (no relay task in between)."""

    def __init__(self, inner: Any, ended: asyncio.Event) -> None:
        self._inner = inner
        self._ended = ended

    @property
    def last_context(self) -> Any:
        """The sender's context of the last message, where the transport keeps one (the SDK reads it)."""
        return getattr(self._inner, "last_context", None)

    async def receive(self) -> Any:
        try:
            return await self._inner.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._ended.set()
            raise

    async def aclose(self) -> None:
        self._ended.set()
        await self._inner.aclose()


@asynccontextmanager
async def _watched(transport: Transport, ended: asyncio.Event) -> AsyncIterator[tuple[Any, Any]]:
    """`transport`, whose read stream sets `ended` when the server's stream ends."""
    try:
        async with transport as (read, write):
            yield _Watched(read, ended), write
    finally:
        ended.set()


def _reason(exc: BaseException) -> str:
    """The first real error inside `exc` (task groups wrap them) as one line."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
