"""The MCP flags of the CLI on real servers: `nbagent tools` prints their stubs, `nbagent run --mcp`
gives their tools to the agent (a real endpoint: the fake OpenAI server), and a recipe can name them."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nbagent.cli.app import app
from nbagent.cli.options import EXIT_ANSWERED, EXIT_ERROR
from nbagent.trajectory import Termination, read_trajectories
from tests.fixtures.fake_openai import FakeOpenAIServer, script_responder

BIN = Path(sys.executable).parent
TIME = f"{BIN / 'mcp-server-time'} --local-timezone Etc/UTC"
ENDPOINT_ENV = ("NBAGENT_BASE_URL", "OPENAI_BASE_URL", "NBAGENT_MODEL", "NBAGENT_API_KEY", "OPENAI_API_KEY")


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    for name in ENDPOINT_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLUMNS", "250")
    return CliRunner()


def test_tools_prints_the_typed_stubs_of_an_mcp_server(runner: CliRunner) -> None:
    result = runner.invoke(app, ["tools", "--mcp", TIME])
    assert result.exit_code == 0, result.output
    assert "def get_current_time(timezone: str)" in result.stdout
    assert "def convert_time(source_timezone: str, time: str, target_timezone: str)" in result.stdout


def test_tools_names_a_server_that_does_not_start(runner: CliRunner, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-server"
    result = runner.invoke(app, ["tools", "--mcp", str(missing)])
    assert result.exit_code == EXIT_ERROR
    (line,) = [x for x in result.stderr.splitlines() if x.strip()]
    assert line.startswith("error: ")
    assert "no-such-server" in line


def test_tools_refuses_a_malformed_header(runner: CliRunner) -> None:
    result = runner.invoke(app, ["tools", "--mcp-url", "http://127.0.0.1:9/mcp", "--mcp-header", "no colon"])
    assert result.exit_code != 0
    assert "'Name: value'" in result.output


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    steps = [
        "<think>Ask the clock.</think>\n<code>\n"
        "now = get_current_time('Etc/UTC')\nprint(now['timezone'])\n</code>",
        "<think>It answered.</think>\n<code>\nsubmit_final_answer(now['timezone'])\n</code>",
    ]
    with FakeOpenAIServer(script_responder(steps), model="fake-model") as srv:
        yield srv


def test_run_gives_the_agent_the_mcp_servers_tools(
    server: FakeOpenAIServer, runner: CliRunner, tmp_path: Path
) -> None:
    out = tmp_path / "t.jsonl"
    args = ["run", "Which timezone?", "--base-url", server.base_url, "--mcp", TIME, "--trajectory", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == EXIT_ANSWERED, result.output
    (traj,) = read_trajectories(out)
    assert traj.termination is Termination.SUBMITTED
    assert traj.final_answer == "Etc/UTC"
    assert "def get_current_time(timezone: str)" in traj.system_prompt
    calls = [c for step in traj.steps if step.cell for c in step.cell.tool_calls]
    assert [c.name for c in calls] == ["get_current_time", "submit_final_answer"]
    assert calls[0].result["timezone"] == "Etc/UTC"


def test_a_recipe_names_mcp_servers() -> None:
    from nbagent_train.config.rl import RLConfig
    from nbagent_train.rl.agent import build_agent
    from tests.rollout.envs import load_environment

    class Endpoint:
        base_url = "http://127.0.0.1:9/v1"
        model_name = "policy"

    assert shutil.which("mcp-server-time", path=str(BIN))
    config = RLConfig.model_validate({"model": "m", "agent": {"mcp": [TIME]}})
    agent = build_agent(config, load_environment(n=1), Endpoint())  # type: ignore[arg-type]
    assert {"get_current_time", "convert_time"} <= set(agent.toolset.names)
