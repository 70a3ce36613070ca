"""MCP servers over stdio as host tools: real servers (mcp-server-time, mcp-server-git, a test script), real
kernels, real agent episodes."""

from __future__ import annotations

import inspect
import pickle
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

pytest.importorskip("mcp")

from nbagent.agent.agent import Agent
from nbagent.errors import ConfigError
from nbagent.kernel import CellStatus, Kernel
from nbagent.models.testing import ScriptedModel
from nbagent.tools import (
    MCPServer,
    MCPServerError,
    ToolBridge,
    ToolReturn,
    Toolset,
    mcp_servers,
    mcp_tools,
)
from nbagent.trajectory import Termination

BIN = Path(sys.executable).parent

# A stdio server made with the SDK: tells its process id, dies on `crash()`, and answers `slow()` late.
FLAKY_SERVER = """\
import os, sys, time
from mcp.server.mcpserver import MCPServer

server = MCPServer("flaky")


@server.tool()
def pid() -> int:
    \"\"\"The server's process id.\"\"\"
    return os.getpid()


@server.tool()
def crash() -> str:
    \"\"\"Exit at once.\"\"\"
    print("crashing on purpose", file=sys.stderr, flush=True)
    os._exit(3)


@server.tool()
def slow(seconds: float) -> str:
    \"\"\"Answer after `seconds`.\"\"\"
    time.sleep(seconds)
    return "late"


server.run()
"""


def code(body: str) -> str:
    return f"<think>step</think>\n<code>\n{body}\n</code>"


@pytest.fixture(scope="module")
def time_server() -> Iterator[MCPServer]:
    with MCPServer.stdio(str(BIN / "mcp-server-time")) as server:
        yield server


@pytest.fixture
def flaky_script(tmp_path: Path) -> Path:
    script = tmp_path / "flaky_server.py"
    script.write_text(FLAKY_SERVER)
    return script


def test_time_server_tools_have_real_signatures(time_server: MCPServer) -> None:
    tools = {tool.name: tool for tool in time_server.tools}
    assert list(tools) == ["get_current_time", "convert_time"]
    now = tools["get_current_time"]
    assert now.render_signature() == "(timezone: str) -> TimeResult"
    # the function says what it really returns (the value and displays); the stub shows the value
    assert inspect.signature(now.function).return_annotation == ToolReturn[now.signature.return_annotation]
    assert now.description == "Get current time in a specific timezone"
    assert now.parameters_schema["required"] == ["timezone"]
    assert "IANA timezone name" in now.parameters_schema["properties"]["timezone"]["description"]
    stubs = Toolset(time_server.tools).render_stubs()
    assert stubs.startswith(
        "class TimeResult(TypedDict):\n    timezone: str\n    datetime: str\n    day_of_week: str\n"
        "    is_dst: bool\n"
    )
    assert (
        "def convert_time(source_timezone: str, time: str, target_timezone: str) -> TimeConversionResult:"
        in stubs
    )
    assert "    source: TimeResult\n    target: TimeResult\n    time_difference: str" in stubs
    assert "    Args:\n        timezone: IANA timezone name" in stubs


def test_a_server_is_not_sent_to_other_processes(time_server: MCPServer) -> None:
    with pytest.raises(TypeError, match="build the MCPServer in the agent factory that each worker calls"):
        pickle.dumps(time_server)
    assert [tool.name for tool in Toolset(time_server)] == ["get_current_time", "convert_time"]


async def test_agent_episode_calls_the_time_server(time_server: MCPServer) -> None:
    completions = [
        code(
            "import inspect\n"
            "print(inspect.signature(get_current_time))\n"
            "now = get_current_time('Europe/Paris')\n"
            "print(type(now).__name__, now['timezone'], now['is_dst'] in (True, False))\n"
            "try:\n"
            "    get_current_time('Mars/Base')\n"
            "except ToolError as exc:\n"
            "    print(exc)"
        ),
        code("submit_final_answer(now['timezone'])"),
    ]
    result = await Agent(ScriptedModel(completions), time_server.tools).run("Where is it?")
    assert result.termination is Termination.SUBMITTED
    assert result.answer == "Europe/Paris"
    trajectory = result.trajectory
    assert "def get_current_time(timezone: str) -> TimeResult:" in trajectory.system_prompt
    assert trajectory.steps[0].observation == (
        "<output>\n(timezone: str) -> TimeResult\ndict Europe/Paris True\n"
        "tool 'get_current_time' failed with MCPToolError: Error executing tool get_current_time: "
        "Invalid timezone: 'No time zone found with key Mars/Base'\n</output>"
    )
    cell = trajectory.steps[0].cell
    assert cell is not None
    good, bad = cell.tool_calls
    assert (good.name, good.args, good.kwargs, good.error) == ("get_current_time", ["Europe/Paris"], {}, None)
    assert set(good.result) == {"timezone", "datetime", "day_of_week", "is_dst"}
    assert good.result["timezone"] == "Europe/Paris"
    assert bad.result is None
    assert bad.error is not None
    assert bad.error.startswith("ToolExecutionError: tool 'get_current_time' failed with MCPToolError")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository with one commit and one untracked file."""
    repo = tmp_path / "repo"
    git = ["git", "-C", str(repo), "-c", "user.name=Test", "-c", "user.email=test@example.com"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "notes.txt").write_text("first\n")
    subprocess.run([*git, "add", "notes.txt"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "Add the notes"], check=True)
    (repo / "draft.txt").write_text("new\n")
    return repo


async def test_git_server_on_a_temporary_repository(repo: Path) -> None:

    with MCPServer.stdio(str(BIN / "mcp-server-git"), ["--repository", str(repo)]) as server:
        tools = Toolset(server.tools)
        assert server.name == "mcp-server-git"
        assert tools.get("git_log").render_signature() == (
            "(\n    repo_path: str,\n    max_count: int = 10,\n    start_timestamp: str | None = None,\n"
            "    end_timestamp: str | None = None,\n) -> str"
        )
        assert tools.get("git_add").render_signature() == "(repo_path: str, files: list[str]) -> str"
        cell = f"repo = {str(repo)!r}\nprint(git_log(repo, max_count=1))\nprint(git_status(repo))"
        async with Kernel() as kernel:
            result = await ToolBridge(tools).run_cell(kernel, cell, timeout=60)
    assert result.status is CellStatus.OK, result.outputs
    text = "".join(output.text for output in result.outputs if output.output_type == "stream")
    assert "Add the notes" in text
    assert "draft.txt" in text
    log, status = result.tool_calls
    assert (log.name, log.args, log.kwargs) == ("git_log", [str(repo), 1], {})
    assert "Add the notes" in log.result
    assert status.name == "git_status"
    assert "Untracked files" in status.result


async def test_a_server_that_dies_mid_episode_is_restarted_once(flaky_script: Path) -> None:
    server = MCPServer.stdio(sys.executable, [str(flaky_script)])
    assert server.name == "flaky_server"
    completions = [
        code("first = pid()\ncrash()"),
        code("second = pid()\nprint(second != first)\ncrash()"),
        code("pid()"),
        code("submit_final_answer('done')"),
    ]
    with server:
        result = await Agent(ScriptedModel(completions), server.tools, max_steps=4).run("q")
        first_pid = result.steps[0].cell.tool_calls[0].result
        second_pid = result.steps[1].cell.tool_calls[0].result
    assert result.termination is Termination.SUBMITTED
    died = "MCP server 'flaky_server' stopped during crash()"
    last_words = "(stderr: crashing on purpose)"
    first, second, third = (step.observation for step in result.steps[:3])
    assert f"ToolError: {died}; the next call starts it again {last_words}" in first
    assert "True" in second
    assert f"ToolError: {died}; it was restarted once already {last_words}" in second
    assert (
        f"ToolError: MCP server 'flaky_server' is down and was restarted once already; check the server "
        f"{last_words}" in third
    )
    assert first_pid != second_pid
    assert not psutil.pid_exists(first_pid)
    assert not psutil.pid_exists(second_pid)
    records = [call for step in result.steps[:3] for call in step.cell.tool_calls]
    assert [(call.name, call.error is None) for call in records] == [
        ("pid", True),
        ("crash", False),
        ("pid", True),
        ("crash", False),
        ("pid", False),
    ]


async def test_a_call_past_its_time_limit_fails_and_the_server_lives_on(flaky_script: Path) -> None:
    with MCPServer.stdio(sys.executable, [str(flaky_script)], name="flaky", timeout_s=1) as server:
        tools = Toolset(server.tools)
        with pytest.raises(MCPServerError) as caught:
            await tools.get("slow").invoke([5])
        assert str(caught.value) == "MCP server 'flaky' did not answer slow() within 1 s"
        pid = (await tools.get("pid").invoke()).value
        assert psutil.pid_exists(pid)
    assert not psutil.pid_exists(pid)  # closing the server ends its process
    with pytest.raises(MCPServerError, match="MCP server 'flaky' is closed"):
        await tools.get("pid").invoke()


@pytest.mark.parametrize(
    ("command", "args", "message"),
    [
        (
            "no-such-mcp-server",
            [],
            "MCP server 'no-such-mcp-server' did not start: FileNotFoundError: [Errno 2] No such file or "
            "directory: 'no-such-mcp-server'",
        ),
        (
            sys.executable,
            ["-c", "import sys; sys.exit('bad config: no token')"],
            "MCP server 'broken' did not start: MCPError: Connection closed (stderr: bad config: no token)",
        ),
        (
            sys.executable,
            ["-c", "import time; time.sleep(60)"],
            "MCP server 'silent' did not answer within 1 s",
        ),
    ],
    ids=["missing", "exits", "silent"],
)
def test_a_server_that_does_not_start_says_why_in_one_line(
    command: str, args: list[str], message: str
) -> None:
    name = message.split("'")[1]
    server = MCPServer.stdio(command, args, name=None if name == command else name, start_timeout_s=1)
    with pytest.raises(MCPServerError) as caught:
        server.start()
    assert str(caught.value) == message
    server.close()


def test_names_two_servers_share_get_each_servers_prefix(flaky_script: Path, time_server: MCPServer) -> None:
    def flaky(name: str, prefix: str | None = None) -> MCPServer:
        return MCPServer.stdio(sys.executable, [str(flaky_script)], name=name, prefix=prefix)

    with (
        flaky("mcp-server-first") as first,
        flaky("second", prefix="b") as second,
        flaky("other-mcp") as other,
    ):
        assert [tool.name for tool in second.tools] == ["b_pid", "b_crash", "b_slow"]
        names = [tool.name for tool in mcp_tools(first, second, time_server)]
        assert names == [
            "pid",
            "crash",
            "slow",
            "b_pid",
            "b_crash",
            "b_slow",
            "get_current_time",
            "convert_time",
        ]
        twins = mcp_tools(first, other)
        assert [tool.name for tool in twins] == [
            "first_pid",
            "first_crash",
            "first_slow",
            "other_pid",
            "other_crash",
            "other_slow",
        ]
        assert twins[0].render_signature() == "() -> int"
        assert twins[3].function is other.tools[0].function


def test_servers_from_command_line_settings() -> None:
    command = f"{shlex.quote(str(BIN / 'mcp-server-time'))} --local-timezone 'Asia/Tokyo'"
    clock, remote = mcp_servers([command], ["http://127.0.0.1:9/mcp"], {"Authorization": "Bearer x"})
    assert (clock.name, remote.name) == ("mcp-server-time", "127.0.0.1:9")
    with clock:  # the arguments reach the server: it describes its tools with the local timezone given
        assert "Use 'Asia/Tokyo' as local timezone" in clock.tools[0].docstring
    remote.close()
    with pytest.raises(ConfigError) as empty:
        mcp_servers([" "])
    assert str(empty.value) == "an MCP server command is empty; write it as 'COMMAND ARGS'"
    with pytest.raises(ConfigError) as unclosed:
        mcp_servers(["server 'unclosed"])
    assert (
        str(unclosed.value)
        == 'MCP server command "server \'unclosed": No closing quotation; check its quotes'
    )
