"""Two processes through `accelerate launch` (CPU, gloo) train exactly what one process trains.

Each rank takes a share of every batch, the loss normalizer is summed over ranks and gradients are
averaged by DDP, so the weights after the run must match a single-process run. With Adam's epsilon at 1
an update is about lr * g / (|g| + 1), so equal weights mean equal gradients, not just equal signs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from nbagent_train.runs.metrics import read_metrics
from tests.train.runs import ENV, adapter_weights, run_cli, write_trajectories

pytestmark = [pytest.mark.train, pytest.mark.slow]


def test_two_processes_match_one(tiny_model_dir: Path, tiny_tokenizer: Any, tmp_path: Path) -> None:
    data = write_trajectories(tmp_path / "t.jsonl", tiny_tokenizer, groups=2, steps=3)
    args = [
        "fit", "-t", str(data), "--model", str(tiny_model_dir), "--lora-rank", "4", "--batch-groups", "1",
        "--lr", "0.01", "--micro-batch-tokens", "700", "--set", "optim.adam_epsilon=1.0",
        "--set", "run.tensorboard=false", "--kl-coef", "0.01",
    ]  # fmt: skip
    single = run_cli(*args, "--out", str(tmp_path / "one"))
    assert single.returncode == 0, single.stdout + single.stderr

    accelerate = str(Path(sys.executable).parent / "accelerate")
    env = {**ENV, "OMP_NUM_THREADS": "1"}
    launch = [accelerate, "launch", "--cpu", "--num_processes", "2", "--num_machines", "1"]
    launch += ["--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517"]
    proc = subprocess.run(
        [*launch, "-m", "nbagent_train", *args, "--out", str(tmp_path / "two")],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("Sample build summary") == 1  # only the main process prints

    one, two = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")
    assert [r["iteration"] for r in two] == [1, 2]
    for a, b in zip(one, two, strict=True):
        assert b["scored_tokens"] == a["scored_tokens"]
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4, abs=1e-7)
        assert b["kl"] == pytest.approx(a["kl"], rel=1e-3, abs=1e-9)
    mine, theirs = adapter_weights(tmp_path / "two" / "final"), adapter_weights(tmp_path / "one" / "final")
    assert mine.keys() == theirs.keys()
    for key in mine:
        assert (mine[key] - theirs[key]).abs().max() < 1e-5, key
