"""`nbagent mcp` as a subprocess, driven by the `mcp` SDK's own client over stdio and streamable HTTP:
state across calls, timeouts and crashes, images, the sandbox's network rule, reset, shutdown, and
`ask_agent` against a scripted endpoint."""

from __future__ import annotations

import base64
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest

from nbagent.kernel.launch import bwrap_unusable
from tests.cli.test_errors import one_error_line
from tests.cli.test_run import STEPS
from tests.fixtures.fake_openai import FakeOpenAIServer, script_responder

pytest.importorskip("mcp")
from mcp import Client, StdioServerParameters
from mcp.types import CallToolResult, ImageContent, TextContent

ROOT = Path(__file__).resolve().parents[2]
SERVER = [sys.executable, "-m", "nbagent.cli", "mcp"]
# A 1x1 PNG.
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="

pytestmark = pytest.mark.timeout(180)
sandboxed = pytest.mark.skipif(bwrap_unusable() is not None, reason=str(bwrap_unusable()))


@asynccontextmanager
async def nbagent_mcp(*flags: str) -> AsyncIterator[Client]:
    """A client of `nbagent mcp FLAGS` started over stdio (stdin closes when the block ends)."""
    params = StdioServerParameters(command=SERVER[0], args=[*SERVER[1:], *flags], cwd=ROOT)
    async with Client(params) as client:
        yield client


def text(result: CallToolResult) -> str:
    return "".join(block.text for block in result.content if isinstance(block, TextContent))


async def run(client: Client, code: str, **arguments: Any) -> CallToolResult:
    result = await client.call_tool("run_cell", {"code": code, **arguments})
    assert isinstance(result, CallToolResult)
    return result


async def workspace(client: Client) -> Path:
    return Path(text(await run(client, "import os\nprint(os.getcwd())")).strip())


@sandboxed
async def test_cells_keep_their_state_and_the_server_cleans_up() -> None:
    async with nbagent_mcp() as client:
        tools = {tool.name for tool in (await client.list_tools()).tools}
        assert tools == {"run_cell", "reset", "list_variables"}  # no model configured: no ask_agent
        first = await run(client, "x = 6 * 7\nprint('set')")
        assert text(first) == "set"
        assert first.structured_content is not None
        assert first.structured_content["status"] == "ok"
        second = await run(client, "x + 1")
        assert text(second) == "43"
        assert second.structured_content is not None
        assert second.structured_content["execution_count"] == first.structured_content["execution_count"] + 1
        failed = await run(client, "1 / 0")
        assert failed.is_error
        assert failed.structured_content is not None
        assert failed.structured_content["error"] == "ZeroDivisionError: division by zero"
        assert "ZeroDivisionError" in text(failed)
        folder = await workspace(client)
        assert folder.is_dir()
    assert not folder.exists()  # stdin closed: the kernel was shut down and its workspace removed


@sandboxed
async def test_a_timeout_interrupts_the_cell_and_keeps_the_state() -> None:
    async with nbagent_mcp("--cell-timeout", "2") as client:
        await run(client, "y = 5")
        started = time.monotonic()
        slow = await run(client, "import time\ntime.sleep(60)")
        assert time.monotonic() - started < 30
        assert slow.is_error
        assert slow.structured_content is not None
        assert slow.structured_content["status"] == "timeout"
        assert slow.structured_content["state_lost"] is False
        assert "[timeout]" in text(slow)
        assert text(await run(client, "y")) == "5"
        crash = await run(client, "import os\nos._exit(1)", timeout_s=30)
        assert crash.structured_content is not None
        assert crash.structured_content["status"] == "crashed"
        assert crash.structured_content["state_lost"] is True
        assert "NameError" in text(await run(client, "y"))  # a fresh kernel answers
        refused = await client.call_tool("run_cell", {"code": "1", "timeout_s": 0})
        assert isinstance(refused, CallToolResult)
        assert refused.is_error


@sandboxed
async def test_an_image_arrives_as_image_content() -> None:
    code = f"import base64\nfrom IPython.display import Image\ndisplay(Image(base64.b64decode({PNG!r})))"
    async with nbagent_mcp() as client:
        result = await run(client, code)
    images = [block for block in result.content if isinstance(block, ImageContent)]
    assert [image.mime_type for image in images] == ["image/png"]
    assert base64.b64decode(images[0].data) == base64.b64decode(PNG)
    assert result.structured_content is not None
    assert result.structured_content["images"] == 1
    assert "kept in trajectory" not in text(result)  # the text carries no placeholder for it


@pytest.fixture
def service() -> Iterator[socket.socket]:
    """A TCP service listening on the host's loopback."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(10)
        yield listener


@pytest.mark.parametrize(
    ("flags", "reached"),
    [([], False), (["--allow-network"], True), (["--no-sandbox"], True)],
    ids=["sandbox", "sandbox, network allowed", "no sandbox"],
)
@sandboxed
async def test_the_sandbox_has_no_network_unless_allowed(
    service: socket.socket, flags: list[str], reached: bool
) -> None:
    port = service.getsockname()[1]
    code = (
        f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=5).close()\nprint('reached')"
    )
    async with nbagent_mcp(*flags) as client:
        result = await run(client, code)
    if reached:
        assert text(result) == "reached"
        service.accept()[0].close()  # the connection really arrived
    else:
        assert result.structured_content is not None
        # the sandbox's own loopback has no such service
        assert result.structured_content["error"].startswith("ConnectionRefusedError: ")
        service.settimeout(0.5)
        with pytest.raises(TimeoutError):
            service.accept()


@sandboxed
async def test_list_variables_and_reset() -> None:
    async with nbagent_mcp() as client:
        await run(client, "z = 41 + 1\nimport sys as j\n_hidden = 1\nj.marker = 'in the process'")
        listed = await client.call_tool("list_variables", {})
        assert isinstance(listed, CallToolResult)
        assert listed.structured_content is not None
        rows = {row["name"]: row for row in listed.structured_content["variables"]}
        assert set(rows) == {"z", "j"}
        assert (rows["z"]["type"], rows["z"]["repr"]) == ("int", "42")
        assert rows["j"]["type"] == "module"
        assert "z: int = 42" in text(listed)
        await client.call_tool("reset", {})
        after = await client.call_tool("list_variables", {})
        assert isinstance(after, CallToolResult)
        assert after.structured_content == {"variables": []}
        assert "NameError" in text(await run(client, "z"))
        marker = "import sys\nhasattr(sys, 'marker')"
        assert text(await run(client, marker)) == "True"  # modules stay loaded
        restarted = await client.call_tool("reset", {"restart": True})
        assert isinstance(restarted, CallToolResult)
        assert "restarted" in text(restarted)
        assert text(await run(client, marker)) == "False"


@sandboxed
async def test_sigterm_stops_the_stdio_server_and_its_kernel() -> None:
    async with nbagent_mcp() as client:
        folder = await workspace(client)
        (server,) = [child for child in psutil.Process().children() if "mcp" in child.cmdline()]
        server.send_signal(signal.SIGTERM)
        await anyio.to_thread.run_sync(server.wait, 30)  # the exit status goes to the client's reaper
        assert not folder.exists()


def _serving_url(proc: subprocess.Popen[str], limit_s: float = 60) -> str:
    """The address `nbagent mcp --http` prints on stderr when it listens."""
    assert proc.stderr is not None
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if select.select([proc.stderr], [], [], 0.5)[0]:
            line = proc.stderr.readline()
            if "serving on " in line:
                return line.split("serving on ")[1].strip()
            assert line, f"the server exited ({proc.wait()})"
    raise AssertionError("the server did not start listening")


@sandboxed
def test_streamable_http_keeps_state_and_stops_on_sigterm() -> None:
    proc = subprocess.Popen([*SERVER, "--http", "--port", "0"], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        url = _serving_url(proc)
        assert url.startswith("http://127.0.0.1:")
        assert url.endswith("/mcp")

        async def session() -> Path:
            async with Client(url) as client:
                await run(client, "n = 20")
                assert text(await run(client, "n + 1")) == "21"
                return await workspace(client)

        folder = anyio.run(session)
        assert folder.is_dir()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert not folder.exists()
    finally:
        proc.kill()
        proc.wait()


@sandboxed
async def test_ask_agent_answers_with_the_configured_model() -> None:
    with FakeOpenAIServer(script_responder(STEPS), model="fake-model") as srv:
        async with nbagent_mcp("--base-url", srv.base_url) as client:
            assert "ask_agent" in {tool.name for tool in (await client.list_tools()).tools}
            result = await client.call_tool("ask_agent", {"question": "What is 17 * 23?"})
            assert isinstance(result, CallToolResult)
            assert text(result).startswith("391\n")
            assert result.structured_content is not None
            assert result.structured_content["termination"] == "submitted"
            assert result.structured_content["steps"] == 2
            assert "x = 17 * 23" in result.structured_content["code"][0]
            assert "NameError" in text(await run(client, "x"))  # the agent's variables stay its own
    assert srv.requests


def test_usage_errors_are_one_line(tmp_path: Path) -> None:
    network = subprocess.run(
        [*SERVER, "--no-sandbox", "--allow-network"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert "--allow-network applies to the sandbox only" in one_error_line(network)
    (tmp_path / "file").write_text("")
    folder = subprocess.run(
        [*SERVER, "--workspace", str(tmp_path / "file" / "ws")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert one_error_line(folder).startswith(f"error: --workspace {tmp_path / 'file' / 'ws'}: ")


def test_the_sdk_is_optional() -> None:
    """`nbagent` imports without the SDK, and `nbagent mcp` says how to get it."""
    code = (
        "import sys\nfrom nbagent.cli.app import main\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'mcp'], 'imported mcp'\n"
        "sys.modules['mcp'] = None\nsys.argv = ['nbagent', 'mcp']\nmain()"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert one_error_line(proc) == "error: nbagent mcp needs the MCP SDK: pip install 'nbagent[mcp]'"
