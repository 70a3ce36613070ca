"""`nbagent collect` and `eval` outputs, as the real console script: a bad output path is refused in one
line before any episode, and a second collector on the same --out is refused while the first runs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from nbagent.trajectory import read_trajectories
from tests.cli.test_errors import one_error_line
from tests.fixtures.fake_openai import FakeOpenAIServer
from tests.rollout.envs import arithmetic_responder

ROOT = Path(__file__).resolve().parents[2]
NBAGENT = Path(sys.executable).with_name("nbagent")


def command(server: FakeOpenAIServer, name: str, out: Path, *extra: str) -> list[str]:
    return [
        str(NBAGENT), name, "--env", "tests.rollout.envs", "--base-url", server.base_url,
        "--model", "fake-model", "--out", str(out), "--no-progress", *extra,
    ]  # fmt: skip


def nbagent(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # the test environment is imported by name
    return subprocess.run(
        args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.mark.parametrize("where", ["folder", "under_a_file"])
def test_collect_refuses_a_bad_out_before_any_episode(
    fake_openai_server: FakeOpenAIServer, tmp_path: Path, where: str
) -> None:
    fake_openai_server.responder = arithmetic_responder(steps=2)
    (tmp_path / "file.txt").write_text("x")
    out = tmp_path if where == "folder" else tmp_path / "file.txt" / "t.jsonl"
    line = one_error_line(nbagent(command(fake_openai_server, "collect", out, "--resume")))
    assert line.startswith(f"error: cannot write the trajectories to {out}: ")
    assert fake_openai_server.requests == []


def test_eval_refuses_a_folder_as_its_table_before_any_episode(
    fake_openai_server: FakeOpenAIServer, tmp_path: Path
) -> None:
    fake_openai_server.responder = arithmetic_responder(steps=2)
    out = tmp_path / "eval.jsonl"
    args = command(fake_openai_server, "eval", out, "--split", "train", "--json", str(tmp_path))
    line = one_error_line(nbagent(args))
    assert line == f"error: cannot write the table to {tmp_path}: it is a folder; give a file path."
    assert fake_openai_server.requests == []
    assert not out.exists()


def test_a_second_collector_on_the_same_out_is_refused_naming_the_first(
    fake_openai_server: FakeOpenAIServer, tmp_path: Path
) -> None:
    fake_openai_server.responder = arithmetic_responder(steps=2)
    fake_openai_server.latency_s = 0.3  # the first one runs for about 8 s
    out = tmp_path / "traj.jsonl"
    n, k = 8, 2
    args = command(fake_openai_server, "collect", out, "--env-arg", f"n={n}", "--samples", str(k), "-c", "2")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not (out.exists() and out.read_bytes().count(b"\n")):
            assert first.poll() is None, first.communicate()[0].decode()
            assert time.monotonic() < deadline, "the first collector wrote nothing in 2 minutes"
            time.sleep(0.05)
        line = one_error_line(nbagent([*args, "--resume"]))
        assert line.startswith(f"error: {out} is being written by process {first.pid} (")
        assert "wait for it to end or stop it" in line
        output, _ = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, output.decode()
    pairs = Counter((t.task.id, t.sample_index) for t in read_trajectories(out))
    assert set(pairs) == {(f"add-{i:03d}", s) for i in range(n) for s in range(k)}
    assert max(pairs.values()) == 1, "a pair was written twice"
    assert out.read_bytes().count(b"\n") == n * k
    assert not out.with_name(out.name + ".lock").exists()
