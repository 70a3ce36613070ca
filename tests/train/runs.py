"""Helpers for tests that run `nbagent-train` as a user would (a subprocess) and read what it wrote."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from nbagent.trajectory import TrajectoryWriter
from tests.fixtures.trajectories import grouped_episodes

CLI = [str(Path(sys.executable).parent / "nbagent-train")]
ENV = {**os.environ, "COLUMNS": "200", "TOKENIZERS_PARALLELISM": "false"}


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, env=ENV)


def write_trajectories(path: Path, tokenizer: Any, groups: int, steps: int = 2, offset: int = 0) -> Path:
    """`groups` tasks x 4 episodes (mixed rewards) to a JSONL file; `offset` keeps task ids distinct."""
    with TrajectoryWriter(path) as writer:
        for traj in grouped_episodes(tokenizer, groups=groups, per_group=4, steps=steps):
            traj.task.id = traj.group_id = f"{traj.task.id}-{offset}"
            writer.write(traj)
    return path


def adapter_weights(folder: Path) -> dict[str, Any]:
    """The tensors of an exported LoRA adapter."""
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))
