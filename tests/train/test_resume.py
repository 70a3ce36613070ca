"""Kill a real `nbagent-train fit` mid-run, resume it, and end with the weights of an uninterrupted run."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from nbagent_train.runs.folder import RunFolder
from nbagent_train.runs.metrics import read_metrics
from tests.train.runs import CLI, ENV, adapter_weights, run_cli, write_trajectories

pytestmark = [pytest.mark.train, pytest.mark.slow]


def test_resume_after_kill_continues_from_the_checkpoint(
    tiny_model_dir: Path, tiny_tokenizer: Any, tmp_path: Path
) -> None:
    data = write_trajectories(tmp_path / "t.jsonl", tiny_tokenizer, groups=3)
    common = [
        "fit", "-t", str(data), "--model", str(tiny_model_dir), "--lora-rank", "4", "--lr", "0.01",
        "--batch-groups", "1", "--epochs", "2", "--save-every", "1",
        "--set", "run.mini_batches=2", "--set", "advantage.dynamic_sampling=true",
    ]  # fmt: skip

    reference = run_cli(*common, "--out", str(tmp_path / "straight"))
    assert reference.returncode == 0, reference.stdout + reference.stderr

    out = tmp_path / "killed"
    proc = subprocess.Popen([*CLI, *common, "--out", str(out)], env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while len(RunFolder(out).checkpoints()) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be interrupted"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    done_before = [int(p.name.removeprefix("step-")) for p in RunFolder(out).checkpoints()]
    assert 2 <= done_before[-1] < 6
    assert not (out / "result.json").exists()

    resumed = run_cli(*common, "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resumed from {out / 'checkpoints'}" in " ".join(resumed.stdout.split())
    assert f"iter {done_before[-1] + 1}/6" in resumed.stdout
    assert f"iter {done_before[-1]}/6" not in resumed.stdout

    iterations = [r["iteration"] for r in read_metrics(out)]
    assert iterations == sorted(set(iterations))
    assert iterations == [r["iteration"] for r in read_metrics(tmp_path / "straight")]
    result = json.loads((out / "result.json").read_text())
    assert (
        result["global_step"]
        == json.loads((tmp_path / "straight" / "result.json").read_text())["global_step"]
    )

    mine, theirs = adapter_weights(out / "final"), adapter_weights(tmp_path / "straight" / "final")
    assert mine.keys() == theirs.keys()
    for key in mine:
        assert (mine[key] == theirs[key]).all(), key
