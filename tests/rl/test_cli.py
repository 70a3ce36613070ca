"""`nbagent-train rl` / `eval` flags: each lands in its config field; bad combinations are named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import nbagent_train.rl
from nbagent_train.cli.app import app
from nbagent_train.config.loading import dump_config
from nbagent_train.config.rl import RLConfig
from nbagent_train.rl.record import RLResult

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[tuple[RLConfig, bool]]:
    """Replace the run itself: keep the config and resume flag the command resolved."""
    calls: list[tuple[RLConfig, bool]] = []

    def fake_rl(config: RLConfig, *, resume: bool = False, console: Any = None) -> RLResult:
        calls.append((config, resume))
        return RLResult(Path("x"), 0, 0, 0.0)

    monkeypatch.setattr(nbagent_train.rl, "rl", fake_rl)
    return calls


def test_rl_flags_map_onto_the_recipe(captured: list[tuple[RLConfig, bool]], tmp_path: Path) -> None:
    args = ["rl", "--config", str(ROOT / "recipes" / "cpu-smoke.yaml"), "--run-dir", str(tmp_path / "r"),
            "--iterations", "7", "--tasks", "3", "--samples", "2", "--staleness", "1", "--lr", "0.5",
            "--policy-url", "http://127.0.0.1:9", "--set", "loop.checkpoint_every=3"]  # fmt: skip
    result = CliRunner(env={"COLUMNS": "400"}).invoke(app, args)
    assert result.exit_code == 0, result.output
    ((cfg, resume),) = captured
    assert not resume
    assert cfg.loop.iterations == 7
    assert cfg.rollout.tasks_per_iteration == 3
    assert cfg.rollout.samples_per_task == 2
    assert cfg.loop.staleness == 1
    assert cfg.server.policy_url == "http://127.0.0.1:9"
    assert cfg.optim.learning_rate == 0.5
    assert cfg.loop.checkpoint_every == 3
    assert cfg.run_dir == tmp_path / "r"
    assert cfg.agent.prefill is not None  # the rest comes from the recipe


def test_resume_reuses_the_run_folder_config(captured: list[tuple[RLConfig, bool]], tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    dump_config(RLConfig(model="m", run_dir=run_dir), run_dir / "config.yaml")
    result = CliRunner(env={"COLUMNS": "400"}).invoke(
        app, ["rl", "--resume", str(run_dir), "--iterations", "9"]
    )
    assert result.exit_code == 0, result.output
    ((cfg, resume),) = captured
    assert resume
    assert cfg.model == "m"
    assert cfg.loop.iterations == 9
    assert cfg.run_dir == run_dir
    both = CliRunner(env={"COLUMNS": "400"}).invoke(
        app, ["rl", "--resume", str(run_dir), "--config", "x.yaml"]
    )
    assert both.exit_code == 2
    assert "--resume reuses the run folder's config" in both.output


def test_eval_needs_something_to_evaluate(tmp_path: Path) -> None:
    result = CliRunner(env={"COLUMNS": "400"}).invoke(
        app, ["eval", "--config", str(ROOT / "recipes" / "cpu-smoke.yaml"), "--no-base"]
    )
    assert result.exit_code == 2
    assert "nothing to evaluate" in result.output
    empty = tmp_path / "run"
    (empty / "adapters").mkdir(parents=True)
    dump_config(RLConfig(model="m", run_dir=empty), empty / "config.yaml")
    result = CliRunner(env={"COLUMNS": "400"}).invoke(app, ["eval", "--run", str(empty)])
    assert result.exit_code == 2
    assert "no published adapter" in result.output
