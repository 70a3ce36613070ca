"""`nbagent collect` and `nbagent eval`: a real SIGKILL mid-run, resume, and the eval table."""

from __future__ import annotations

import inspect
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest
import typer
from typer.testing import CliRunner

from nbagent.cli.app import app
from nbagent.cli.collect import EndpointAgentFactory, Rollout
from nbagent.cli.options import with_flag_groups
from nbagent.trajectory import Termination, read_trajectories
from tests.fixtures.fake_openai import FakeOpenAIServer
from tests.rollout.envs import arithmetic_responder

ROOT = Path(__file__).resolve().parents[2]


def cli_args(server: FakeOpenAIServer, out: Path, *extra: str) -> list[str]:
    return [
        "--env", "tests.rollout.envs", "--base-url", server.base_url, "--model", "fake-model",
        "--out", str(out), "--no-progress", *extra,
    ]  # fmt: skip


def count_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def kernel_pids(pid: int) -> list[int]:
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def wait_gone(pids: list[int], timeout_s: float = 30.0) -> list[int]:
    """PIDs still alive after `timeout_s` (killed then, so the test leaves nothing behind)."""
    _gone, alive = psutil.wait_procs([p for p in map(_proc, pids) if p is not None], timeout=timeout_s)
    for proc in alive:
        proc.kill()
    return [proc.pid for proc in alive]


def _proc(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


@pytest.mark.slow
def test_sigkill_at_any_moment_then_resume_loses_and_repeats_nothing(
    fake_openai_server: FakeOpenAIServer, tmp_path: Path
) -> None:
    fake_openai_server.responder = arithmetic_responder(steps=2)
    fake_openai_server.latency_s = 0.1
    out = tmp_path / "traj.jsonl"
    n, k = 10, 3
    command = [
        sys.executable, "-c", "from nbagent.cli import main; main()", "collect",
        *cli_args(fake_openai_server, out, "--env-arg", f"n={n}", "--samples", str(k), "--concurrency", "4"),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rng = random.Random(1234)
    kills = 0
    leftovers: list[int] = []
    for attempt in range(3):
        before = count_lines(out)
        proc = subprocess.Popen(
            [*command, *(["--resume"] if attempt else [])],
            cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        target = before + rng.randint(2, 6)
        deadline = time.monotonic() + 120
        while count_lines(out) < target and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(rng.uniform(0.005, 0.05))
        if proc.poll() is not None:
            break  # it finished before we could kill it
        children = kernel_pids(proc.pid)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += 1
        leftovers += wait_gone(children)
    assert kills >= 2
    assert leftovers == [], "kernels outlived the killed collector"
    final = subprocess.run(
        [*command, "--resume"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert final.returncode == 0, final.stdout + final.stderr
    trajs = list(read_trajectories(out))  # on_error="raise": no torn or corrupt line is left
    counted = Counter((t.task.id, t.sample_index) for t in trajs)
    assert set(counted) == {(f"add-{i:03d}", s) for i in range(n) for s in range(k)}
    assert max(counted.values()) == 1, "a pair was written twice"
    assert all(t.termination is Termination.SUBMITTED for t in trajs)
    assert "0 failed" in final.stderr


@pytest.mark.slow
def test_sigkill_of_the_collector_alone_takes_its_worker_processes_and_kernels_with_it(
    fake_openai_server: FakeOpenAIServer, tmp_path: Path
) -> None:
    """``kill -9`` of the collector's pid only (not its process group): its worker processes, their
    kernel templates and kernels die with it; a resume with workers completes the file."""
    fake_openai_server.responder = arithmetic_responder(steps=2)
    fake_openai_server.latency_s = 0.2
    out = tmp_path / "traj.jsonl"
    args = cli_args(fake_openai_server, out, "--env-arg", "n=8", "--samples", "2", "--concurrency", "4")
    command = [
        sys.executable,
        "-c",
        "from nbagent.cli import main; main()",
        "collect",
        *args,
        "--workers",
        "2",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while count_lines(out) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the collection ended before it could be killed"
    children = kernel_pids(proc.pid)
    workers = [pid for pid in children if "spawn_main" in " ".join(psutil.Process(pid).cmdline())]
    assert len(workers) == 2
    assert len(children) > 2 * 3  # the workers, their templates and kernels
    proc.kill()
    proc.wait()
    assert wait_gone(children) == [], "worker processes or kernels outlived the killed collector"
    final = subprocess.run(
        [*command, "--resume"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert final.returncode == 0, final.stdout + final.stderr
    assert "in 2 worker processes" in final.stderr
    counted = Counter((t.task.id, t.sample_index) for t in read_trajectories(out))
    assert set(counted) == {(f"add-{i:03d}", s) for i in range(8) for s in range(2)}
    assert max(counted.values()) == 1, "a pair was written twice"


def test_collect_cli_refuses_an_existing_file_without_resume(
    fake_openai_server: FakeOpenAIServer, tmp_path: Path
) -> None:
    fake_openai_server.responder = arithmetic_responder(steps=2)
    out = tmp_path / "traj.jsonl"
    out.write_text("{}\n")
    result = CliRunner().invoke(app, ["collect", *cli_args(fake_openai_server, out)])
    assert result.exit_code == 1
    assert "--resume" in result.output
    assert out.read_text() == "{}\n"


def test_collect_cli_explains_an_unreachable_endpoint(tmp_path: Path) -> None:
    args = ["collect", "--env", "tests.rollout.envs", "--base-url", "http://127.0.0.1:9/v1"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "t.jsonl")])
    assert result.exit_code == 1
    assert "Cannot reach the endpoint" in result.output
    assert not (tmp_path / "t.jsonl").exists()


def test_eval_prints_and_writes_the_table(fake_openai_server: FakeOpenAIServer, tmp_path: Path) -> None:
    fake_openai_server.responder = arithmetic_responder(steps=2)
    out = tmp_path / "eval.jsonl"
    args = cli_args(fake_openai_server, out, "--env-arg", "n=4", "--env-arg", "wrong=1", "--split", "train")
    result = CliRunner().invoke(app, ["eval", *args, "--samples", "2", "--success-metric", "answer"])
    assert result.exit_code == 0, result.output
    for text in ("arith", "pass@2", "mean@2", "75.0"):
        assert text in result.output
    table = json.loads(out.with_suffix(".metrics.json").read_text())
    (row,) = table["rows"]
    assert (row["dataset"], row["tasks"], row["episodes"], row["k"]) == ("arith", 4, 8, 2)
    assert row["pass_at_k"] == 0.75
    assert row["mean_at_k"] == 0.75
    assert row["metrics"]["answer"] == 0.75


def test_flag_groups_are_parsed_into_their_dataclasses_with_its_defaults() -> None:
    """Each dataclass parameter becomes its fields' options, in its place; collect's agent flags run
    sandboxed with L0's episode timeout unless told otherwise."""
    seen: list[tuple[int, EndpointAgentFactory, Rollout, bool]] = []

    @with_flag_groups
    def command(first: int, *, agent: EndpointAgentFactory, rollout: Rollout, last: bool = False) -> None:
        seen.append((first, agent, rollout, last))

    one = typer.Typer()
    one.command()(command)
    args = ["7", "--max-steps", "4", "--tool", "a:b", "--tool", "c:d", "--ray", "local", "--last"]
    result = CliRunner().invoke(one, args)
    assert result.exit_code == 0, result.output
    assert seen == [(7, EndpointAgentFactory(max_steps=4, tool=["a:b", "c:d"]), Rollout(ray="local"), True)]
    assert seen[0][1].sandbox
    assert seen[0][1].episode_timeout == 240.0
    options = [p.name for p in inspect.signature(command).parameters.values()]
    assert options[:3] == ["first", "base_url", "model"]
    assert options[-3:] == ["max_inflight_requests", "tag", "last"]
