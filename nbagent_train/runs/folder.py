"""The layout of a run folder (`fit`, `sft` and `rl` write the same one) and an RL run's state.

``config.yaml`` (the resolved recipe), ``metrics.jsonl``, ``checkpoints/step-NNNNNN/`` (complete once
the backend's trainer state is written), and for `rl` also ``state.json``, ``trajectories/``,
``adapters/vNNNNN/``, ``vllm.log`` and ``superseded/``. Only this module spells those names.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nbagent.trajectory import read_trajectories
from nbagent_train.backends.base import TRAINER_STATE_FILE
from nbagent_train.config.loading import load_config
from nbagent_train.config.rl import RLConfig
from nbagent_train.errors import CheckpointError
from nbagent_train.runs.metrics import METRICS_FILE, parse_metrics_line

CONFIG_FILE = "config.yaml"
STATE_FILE = "state.json"
"""The RL run's progress (`RunState`); not the backend's per-checkpoint ``trainer_state.json``."""
CHECKPOINTS = "checkpoints"
BUILD_SUMMARY = "build_summary.json"
_STEP = "step-"


@dataclass
class RunState:
    """``state.json``: written atomically after every finished iteration."""

    iterations_done: int = 0
    policy_version: int = 0
    checkpoint: str | None = None
    """The newest complete checkpoint (relative to the run folder)."""
    wall_s: float = 0.0
    """Seconds spent in iterations so far, across resumes."""
    resumes: int = 0


class RunFolder:
    """Layout of a run folder.

    ``config.yaml`` (resolved recipe), ``state.json``, ``metrics.jsonl``, ``reward.png``, ``metrics.png``,
    ``tb/`` (TensorBoard), ``trajectories/iter-NNNNN.jsonl``, ``adapters/vNNNNN/`` (published weights),
    ``checkpoints/step-NNNNNN/`` (resumable; the number is the iteration), ``vllm.log``, and
    ``superseded/`` for the records of iterations a resume had to redo (nothing is deleted).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def state_path(self) -> Path:
        return self.root / STATE_FILE

    @property
    def server_log(self) -> Path:
        return self.root / "vllm.log"

    def trajectories(self, iteration: int) -> Path:
        return self.root / "trajectories" / f"iter-{iteration:05d}.jsonl"

    def ready_marker(self, iteration: int) -> Path:
        """Written by the main process once the batch of `iteration` is collected."""
        return self.root / "trajectories" / f"iter-{iteration:05d}.ready.json"

    def newest_adapter(self) -> Path | None:
        folder = self.root / "adapters"
        found = sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
        return found[-1] if found else None

    def adapter(self, version: int) -> Path:
        return self.root / "adapters" / f"v{version:05d}"

    def checkpoint(self, iteration: int) -> Path:
        return self.root / CHECKPOINTS / f"{_STEP}{iteration:06d}"

    def checkpoints(self) -> list[Path]:
        """Complete checkpoints (their trainer state written last), oldest first."""
        folder = self.root / CHECKPOINTS
        if not folder.is_dir():
            return []
        found = [
            p for p in folder.iterdir() if p.name.startswith(_STEP) and (p / TRAINER_STATE_FILE).is_file()
        ]
        return sorted(found, key=lambda p: int(p.name.removeprefix(_STEP)))

    def read_state(self) -> RunState:
        if not self.state_path.is_file():
            return RunState()
        try:
            return RunState(**json.loads(self.state_path.read_text()))
        except (ValueError, TypeError) as exc:
            raise CheckpointError(
                f"{self.state_path} is unreadable ({exc}); delete it to resume from checkpoints"
            ) from exc

    def write_state(self, state: RunState) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(state), indent=2))
        tmp.replace(self.state_path)

    def supersede(self, after: int, keep_version: int) -> dict[str, int]:
        """Set aside what iterations after `after` recorded, because the resumed run redoes them.

        Metrics lines of those iterations move to ``superseded/metrics-<time>.jsonl``. Each trajectory
        file of those iterations is copied to ``superseded/`` whole, and rewritten with only the episodes
        sampled from a policy version <= `keep_version` (still valid: the collector resumes from them).
        """
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out = self.root / "superseded"
        counts = {"metrics_lines": 0, "episodes_kept": 0, "episodes_set_aside": 0}
        metrics = self.root / METRICS_FILE
        if metrics.is_file():
            keep: list[str] = []
            drop: list[str] = []
            for line in metrics.read_text(encoding="utf-8").splitlines():
                if not line.strip():
                    continue
                record = parse_metrics_line(line)  # None: a torn line from the kill
                (drop if record is None or record["iteration"] > after else keep).append(line)
            if drop:
                out.mkdir(parents=True, exist_ok=True)
                (out / f"metrics-{stamp}.jsonl").write_text("".join(x + "\n" for x in drop))
                metrics.write_text("".join(x + "\n" for x in keep))
                counts["metrics_lines"] = len(drop)
        folder = self.root / "trajectories"
        for marker in sorted(folder.glob("iter-*.ready.json")) if folder.is_dir() else []:
            if int(marker.name.split(".")[0].removeprefix("iter-")) > after:
                marker.unlink()
        for path in sorted(folder.glob("iter-*.jsonl")) if folder.is_dir() else []:
            if int(path.stem.removeprefix("iter-")) <= after:
                continue
            kept = [
                t
                for t in read_trajectories(path, on_error="skip")
                if isinstance(t.model.policy_version, int) and t.model.policy_version <= keep_version
            ]
            total = sum(1 for _ in read_trajectories(path, on_error="skip"))
            out.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, out / f"{path.stem}-{stamp}.jsonl")
            path.write_text("".join(t.to_json_line() for t in kept), encoding="utf-8")
            counts["episodes_kept"] += len(kept)
            counts["episodes_set_aside"] += total - len(kept)
        return counts


def checkpoint_iteration(path: Path) -> int:
    """The iteration a loop checkpoint was written after (read from its state file)."""
    from nbagent_train.backends.base import TRAINER_STATE_FILE as TRAINER_STATE_FILE

    try:
        state = json.loads((path / TRAINER_STATE_FILE).read_text())
        return int(state["extra"]["iteration"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path} is not a checkpoint of `nbagent-train rl` ({exc})") from exc


def default_run_dir() -> Path:
    return Path("runs") / time.strftime("%Y%m%d-%H%M%S")


def load_run_config(run_dir: str | Path, overrides: dict[str, Any] | None = None) -> RLConfig:
    """The resolved config saved in a run folder, with `overrides` (e.g. ``loop.iterations``) applied."""
    path = RunFolder(run_dir).config_path
    if not path.is_file():
        raise CheckpointError(f"{run_dir} is not a run folder (no {CONFIG_FILE}); nothing to resume")
    config = load_config(path, overrides, cls=RLConfig)
    return config.model_copy(update={"run_dir": Path(run_dir)})
