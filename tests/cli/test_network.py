"""What kernel code of `nbagent run` and `nbagent collect` can reach on the network, tried against a real
service listening on the host's loopback: `--sandbox` cuts it unless `--allow-network`; collections are
sandboxed by default."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nbagent.cli.app import app
from nbagent.cli.options import EXIT_ANSWERED, EXIT_ERROR
from nbagent.kernel.launch import bwrap_unusable
from nbagent.trajectory import read_trajectories
from tests.cli.test_run import runner
from tests.fixtures.fake_openai import FakeOpenAIServer, script_responder
from tests.rollout.test_outputs import command, nbagent

__all__ = ["runner"]

pytestmark = pytest.mark.skipif(bwrap_unusable() is not None, reason=str(bwrap_unusable()))


@pytest.fixture
def service() -> Iterator[int]:
    """A TCP service on the host's loopback; yields its port."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


def _probe_steps(port: int) -> list[str]:
    """An agent that tries the service, then submits 'reached' or 'blocked'."""
    code = (
        "import socket\ntry:\n"
        f"    socket.create_connection(('127.0.0.1', {port}), timeout=5).close()\n"
        "    reached = 'reached'\nexcept OSError:\n    reached = 'blocked'\nprint(reached)"
    )
    return [
        f"<think>Try it.</think>\n<code>\n{code}\n</code>",
        "<think>Done.</think><code>submit_final_answer(reached)</code>",
    ]


@pytest.mark.parametrize(
    ("flags", "expected"),
    [(["--sandbox"], "blocked"), (["--sandbox", "--allow-network"], "reached"), ([], "reached")],
    ids=["sandbox", "sandbox, network allowed", "no sandbox"],
)
def test_run_sandbox_has_no_network_unless_allowed(
    runner: CliRunner, service: int, flags: list[str], expected: str
) -> None:
    with FakeOpenAIServer(script_responder(_probe_steps(service))) as srv:
        args = ["run", "q", "--base-url", srv.base_url, "--no-save", "--json", "--quiet", *flags]
        result = runner.invoke(app, args)
    assert result.exit_code == EXIT_ANSWERED, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["answer"] == expected


def test_allow_network_without_the_sandbox_is_refused(runner: CliRunner) -> None:
    with FakeOpenAIServer(script_responder(["<code>1</code>"])) as srv:
        result = runner.invoke(app, ["run", "q", "--base-url", srv.base_url, "--no-save", "--allow-network"])
        assert srv.requests == []
    assert result.exit_code == EXIT_ERROR
    assert "--allow-network applies to the sandbox only" in result.output


@pytest.mark.parametrize(("flags", "expected"), [([], "blocked"), (["--no-sandbox"], "reached")])
def test_collect_is_sandboxed_by_default(
    fake_openai_server: FakeOpenAIServer, service: int, tmp_path: Path, flags: list[str], expected: str
) -> None:
    fake_openai_server.responder = script_responder(_probe_steps(service))
    out = tmp_path / "t.jsonl"
    done = nbagent(command(fake_openai_server, "collect", out, "--env-arg", "n=1", *flags))
    assert done.returncode == 0, done.stderr
    (trajectory,) = read_trajectories(out)
    assert trajectory.final_answer == expected
