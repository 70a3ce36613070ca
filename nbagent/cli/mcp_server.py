"""The MCP side of `nbagent mcp`: the tools over a `NotebookSession`, served on stdio or streamable HTTP.

Imported only once the command has checked that the `mcp` SDK is installed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Annotated

import anyio
import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, ContentBlock, ImageContent, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

import nbagent
from nbagent.cli.notebook_session import NotebookSession
from nbagent.errors import ConfigError, NBAgentError
from nbagent.kernel import KernelConfig, render_cell
from nbagent.trajectory import CellOutput, CellResult, CellStatus, DisplayData, ErrorOutput, ExecuteResult
from nbagent.trajectory.schema import Termination

if TYPE_CHECKING:
    from nbagent.agent import RunResult

IMAGE_MIMES = ("image/png", "image/jpeg", "image/gif", "image/webp")
"""Outputs of these types reach the client as image content; the text shows the rest of the bundle."""
STOP_GRACE_S = 2
"""Seconds the transport has to stop after SIGTERM or SIGINT."""


class CellReport(BaseModel):
    """How a cell ended (its output is in the content)."""

    status: CellStatus
    duration_s: float
    execution_count: int | None
    state_lost: bool = Field(description="The kernel was restarted: earlier variables are gone.")
    error: str | None = Field(description="The exception the cell raised, as `Name: message`.")
    images: int = Field(description="How many image outputs follow the text.")


class Variable(BaseModel):
    name: str
    type: str
    repr: str


class VariableList(BaseModel):
    variables: list[Variable]


class AgentReport(BaseModel):
    """How the agent's episode ended."""

    answer: str | None
    termination: Termination
    detail: str | None
    steps: int
    wall_s: float
    code: list[str] = Field(description="The code the agent ran, one cell per step.")


def _without_images(output: CellOutput) -> CellOutput:
    if isinstance(output, ExecuteResult | DisplayData):
        return output.model_copy(
            update={"data": {k: v for k, v in output.data.items() if k not in IMAGE_MIMES}}
        )
    return output


def cell_content(result: CellResult, budget_chars: int) -> CallToolResult:
    """A cell's outputs as the client reads them: the text as the agent sees it (`render_cell`), then
    each image; its status in the structured content."""
    images: list[ContentBlock] = [
        ImageContent(data="".join(value.split()), mime_type=mime)
        for output in result.outputs
        if isinstance(output, ExecuteResult | DisplayData)
        for mime, value in output.data.items()
        if mime in IMAGE_MIMES and isinstance(value, str)
    ]
    text_only = result.model_copy(update={"outputs": [_without_images(o) for o in result.outputs]})
    text = render_cell(text_only, budget_chars)
    error = next((f"{o.ename}: {o.evalue}" for o in result.outputs if isinstance(o, ErrorOutput)), None)
    report = CellReport(
        status=result.status,
        duration_s=round(result.duration_s, 3),
        execution_count=result.execution_count,
        state_lost=result.state_lost,
        error=error,
        images=len(images),
    )
    texts: list[ContentBlock] = [TextContent(text=text)] if text else []
    return CallToolResult(
        content=[*texts, *images] or [TextContent(text="(no output)")],
        structured_content=report.model_dump(mode="json"),
        is_error=not result.ok,
    )


def _kernel_description(config: KernelConfig) -> str:
    if not config.sandbox:
        return "The kernel runs with the user's rights (no sandbox), network included."
    network = "has the network" if config.allow_network else "has no network"
    return (
        "The kernel is sandboxed: the file system is read-only except its working directory, /tmp is "
        f"private, and it {network}."
    )


def build_server(session: NotebookSession, *, cell_timeout: float, output_chars: int) -> MCPServer:
    """The MCP server with the notebook's tools (and `ask_agent` when the session has an agent)."""
    config = session.config
    about = f"{_kernel_description(config)} Its working directory is {session.workspace}."
    server: MCPServer = MCPServer(
        "nbagent",
        version=nbagent.__version__,
        instructions=(
            "A persistent Python notebook: run_cell runs code in a Jupyter kernel whose variables, imports "
            f"and definitions persist between calls until reset. {about}"
        ),
        log_level="WARNING",
    )

    @server.tool(
        description=(
            "Run Python code as the next cell of the notebook and return its output: printed text, the "
            "value of the last expression, the traceback of an error, and plots or other images. State "
            f"persists between calls. A cell is interrupted after timeout_s seconds (default "
            f"{cell_timeout:g}); its variables are kept. {about}"
        ),
        annotations=ToolAnnotations(
            title="Run a notebook cell", open_world_hint=not config.sandbox or config.allow_network
        ),
    )
    async def run_cell(
        code: str, timeout_s: Annotated[float | None, Field(gt=0)] = None
    ) -> Annotated[CallToolResult, CellReport]:
        return cell_content(await session.run(code, timeout_s or cell_timeout), output_chars)

    @server.tool(
        description="Clear the notebook's variables. With restart, start a fresh kernel process instead "
        "(also unloads imported modules and stops threads). Files in the working directory stay.",
        annotations=ToolAnnotations(title="Reset the notebook", destructive_hint=True),
    )
    async def reset(restart: bool = False) -> str:
        try:
            return await session.reset(restart=restart)
        except NBAgentError as exc:
            raise ToolError(str(exc)) from exc

    @server.tool(
        description="List the notebook's variables: name, type and a short repr of each.",
        annotations=ToolAnnotations(title="List the variables", read_only_hint=True),
    )
    async def list_variables() -> Annotated[CallToolResult, VariableList]:
        try:
            rows = await session.variables(cell_timeout)
        except NBAgentError as exc:
            raise ToolError(str(exc)) from exc
        listing = VariableList(variables=[Variable.model_validate(row) for row in rows])
        lines = [f"{v.name}: {v.type} = {v.repr}" for v in listing.variables] or ["(no variables)"]
        return CallToolResult(
            content=[TextContent(text="\n".join(lines))], structured_content=listing.model_dump(mode="json")
        )

    if session.agent is not None:

        @server.tool(
            description=(
                "Ask nbagent's agent to answer a question by writing and running Python, step by step, in "
                "a notebook of its own (its own variables; the same working directory, so files pass "
                "both ways). Returns its answer and a summary of how it got there."
            ),
            annotations=ToolAnnotations(title="Ask the notebook agent"),
        )
        async def ask_agent(question: str) -> Annotated[CallToolResult, AgentReport]:
            return agent_content(await session.ask(question))

    return server


def agent_content(result: RunResult[str]) -> CallToolResult:
    """The agent's answer (or why it has none) and a one-line summary; the episode in brief as the
    structured content."""
    traj = result.trajectory
    report = AgentReport(
        answer=result.answer,
        termination=traj.termination,
        detail=traj.termination_detail or traj.error,
        steps=len(traj.steps),
        wall_s=round(traj.wall_s, 1),
        code=[step.action.code for step in traj.steps if step.action.code],
    )
    steps = f"{report.steps} step{'' if report.steps == 1 else 's'}"
    how = f"[{report.termination.value} after {steps} in {report.wall_s:g} s]"
    if result.answer is None:
        text = f"No answer: {report.detail or report.termination.value}\n{how}"
    else:
        text = f"{result.answer}\n\n{how}"
    return CallToolResult(
        content=[TextContent(text=text)],
        structured_content=report.model_dump(mode="json"),
        is_error=result.answer is None,
    )


# --------------------------------------------------------------------------------------------------
# Serving
# --------------------------------------------------------------------------------------------------


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on ``(host, port)`` (port 0: any free one); `ConfigError` when it cannot."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)
    except OSError as exc:
        why = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ConfigError(f"cannot listen on {host}:{port} ({why})") from exc


async def serve(server: MCPServer, session: NotebookSession, listener: socket.socket | None) -> None:
    """Serve on stdio (until stdin closes), or on streamable HTTP at ``/mcp`` on `listener`, until
    SIGTERM or SIGINT; the session is closed whatever ends it."""
    try:
        async with anyio.create_task_group() as tasks:
            if listener is None:

                async def stop_stdio() -> None:
                    await session.aclose()
                    # stdin is read by a worker thread that no cancellation stops: with the kernel
                    # down, exit soon even if the client keeps stdin open.
                    timer = threading.Timer(STOP_GRACE_S, os._exit, (0,))
                    timer.daemon = True
                    timer.start()
                    tasks.cancel_scope.cancel()

                tasks.start_soon(_on_signal, stop_stdio)
                await server.run_stdio_async()
            else:
                web = _http_server(server, listener)

                async def stop_http() -> None:
                    web.should_exit = True  # finish the requests in flight, then return from serve

                tasks.start_soon(_on_signal, stop_http)
                await web.serve(sockets=[listener])
            tasks.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await session.aclose()


async def _on_signal(stop: Callable[[], Awaitable[None]]) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            await stop()
            return


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handlers (`serve` has them): it would raise the signal again
    once stopped, which kills the process before the session is closed."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _http_server(server: MCPServer, listener: socket.socket) -> uvicorn.Server:
    host, port = listener.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"nbagent mcp: serving on http://{shown}:{port}/mcp", file=sys.stderr, flush=True)
    app = server.streamable_http_app(host=host)  # on the loopback: local Host and Origin headers only
    return _Uvicorn(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=STOP_GRACE_S))
