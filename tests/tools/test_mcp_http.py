"""An MCP server over streamable HTTP, written with the SDK in this file and served by uvicorn on a free
port: headers, stub rendering of nested, optional and default parameters, images, and errors."""

from __future__ import annotations

import base64
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any, Literal

import pytest

pytest.importorskip("mcp")

import uvicorn
from mcp.server.mcpserver import MCPServer as SDKServer
from mcp.server.mcpserver.exceptions import ToolError as SDKToolError
from mcp.server.mcpserver.utilities.types import Image
from pydantic import BaseModel, Field
from starlette.responses import PlainTextResponse

from nbagent.kernel import CellStatus, Kernel
from nbagent.kernel.render import render_cell
from nbagent.tools import MCPServer, MCPServerError, ToolBridge, Toolset

TOKEN = "Bearer s3cret"
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


class Corner(BaseModel):
    """Where a box starts."""

    x: float
    y: float = 0.0
    label: str | None = Field(None, description="Text printed next to the corner.")


def build_app(seen: list[str]) -> Any:
    """The SDK's streamable HTTP app behind a check of the Authorization header (refused: 401)."""
    server = SDKServer("shapes")

    @server.tool()
    def place(
        corner: Corner, sizes: list[int], unit: Literal["cm", "m"] = "cm", scale: float | None = None
    ) -> str:
        """Place a box on the page.

        Args:
            corner: Its top-left corner.
            sizes: Width and height.
        """
        return repr((corner.model_dump(exclude_unset=True), sizes, unit, scale))

    @server.tool()
    def chart(title: str) -> Image:
        """Draw a chart."""
        return Image(data=PNG, format="png")

    @server.tool()
    def refuse(reason: str) -> str:
        """Always fails."""
        raise SDKToolError(f"refused: {reason}")

    inner = server.streamable_http_app()

    async def guarded(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            header = dict(scope["headers"]).get(b"authorization", b"").decode()
            seen.append(header)
            if header != TOKEN:
                await PlainTextResponse("unauthorized", status_code=401)(scope, receive, send)
                return
        await inner(scope, receive, send)

    return guarded


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, list[str]]]:
    """(URL, the Authorization headers received) of the server, running in a thread."""
    seen: list[str] = []
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(build_app(seen), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/mcp", seen
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def shapes(served: tuple[str, list[str]]) -> Iterator[MCPServer]:
    with MCPServer.http(served[0], {"Authorization": TOKEN}, name="shapes") as server:
        yield server


def test_a_server_that_refuses_the_connection_says_why(served: tuple[str, list[str]]) -> None:
    url, _ = served
    port = url.split(":")[2].split("/")[0]
    server = MCPServer.http(url, start_timeout_s=10)
    with pytest.raises(MCPServerError) as caught:
        server.start()
    assert str(caught.value) == (
        f"MCP server '127.0.0.1:{port}' did not start: MCPError: Server returned an error response "
        "(HTTP 401 Unauthorized)"
    )
    server.close()


def test_the_configured_headers_are_sent(shapes: MCPServer, served: tuple[str, list[str]]) -> None:
    assert [tool.name for tool in shapes.tools] == ["place", "chart", "refuse"]
    assert TOKEN in served[1]


def test_nested_optional_and_default_parameters_render_as_python(shapes: MCPServer) -> None:
    assert (
        Toolset(shapes.tools).render_stubs().split("\n\ndef chart")[0]
        == '''\
class Corner(TypedDict):
    """Where a box starts."""
    x: float
    y: float = 0.0
    label: str | None = None  # Text printed next to the corner.

def place(
    corner: Corner,
    sizes: list[int],
    unit: Literal['cm', 'm'] = 'cm',
    scale: float | None = None,
) -> str:
    """Place a box on the page.

    Args:
        corner: Its top-left corner.
        sizes: Width and height.
    """
    ...'''
    )


CELL = """\
print(place({"x": 1, "label": "A"}, [3, "4"], scale=0.5))
try:
    place({"y": 2}, [1])
except TypeError as exc:
    print("TypeError:", exc)
print(repr(chart("sales")))
try:
    refuse("no reason")
except ToolError as exc:
    print("ToolError:", exc)
"""


async def test_kernel_code_gets_values_displays_and_errors(shapes: MCPServer) -> None:
    async with Kernel() as kernel:
        result = await ToolBridge(shapes.tools).run_cell(kernel, CELL, timeout=60)
    assert result.status is CellStatus.OK, result.outputs
    # nested values arrive as dicts: fields left unset are not sent, so the server applies its defaults
    assert render_cell(result) == (
        "({'x': 1.0, 'label': 'A'}, [3, 4], 'cm', 0.5)\n"
        "TypeError: place() argument 'corner' must be Corner, got dict {'y': 2} (x: Field required)\n"
        "[image/png, 70 bytes: kept in trajectory]\n"
        "''\n"
        "ToolError: tool 'refuse' failed with MCPToolError: Error executing tool refuse: refused: no reason"
    )
    image = next(output for output in result.outputs if output.output_type == "display_data")
    assert image.data == {"image/png": base64.b64encode(PNG).decode()}
    placed, bad, charted, refused = result.tool_calls
    assert (placed.name, placed.args, placed.kwargs) == (
        "place",
        [{"x": 1, "label": "A"}, [3, "4"]],
        {"scale": 0.5},
    )
    assert placed.result == "({'x': 1.0, 'label': 'A'}, [3, 4], 'cm', 0.5)"
    assert bad.error is not None
    assert bad.error.startswith("ToolArgumentError")
    assert (charted.result, charted.error) == ("", None)
    assert refused.error == (
        "ToolExecutionError: tool 'refuse' failed with MCPToolError: Error executing tool refuse: "
        "refused: no reason"
    )
