"""The loop's bookkeeping end to end with real kernels, the real math environment and real HTTP, but a
recording trainer backend and the fake OpenAI-compatible server: policy versions, staleness, the run
folder, resume. (The real vLLM + TRL path is in test_vllm_loop.py.)"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from rich.console import Console

from nbagent.trajectory import Reward, Trajectory, read_trajectories
from nbagent_environments.math import MathEnvironment
from nbagent_train.config.loading import build_config
from nbagent_train.config.rl import RLConfig
from nbagent_train.errors import CheckpointError
from nbagent_train.rl.loop import RLRun
from nbagent_train.runs.folder import RunFolder
from nbagent_train.runs.metrics import read_metrics
from tests.fixtures.fake_openai import FakeOpenAIServer
from tests.rl.fakes import FakeEndpoint, RecordingBackend, arithmetic_responder

REQUIRED = [
    "iteration",
    "reward_mean",
    "reward_std",
    "success_rate",
    "steps_mean",
    "tokens/completion",
    "time/rollout_s",
    "time/train_s",
    "time/publish_s",
    "policy_version",
    "update/loss",
]


def config(run_dir: Path, **loop: Any) -> RLConfig:
    return build_config(
        {
            "model": "fake",
            "run_dir": str(run_dir),
            "env": {"name": "math", "kwargs": {"dataset": "arithmetic"}, "success_key": "correct"},
            "agent": {
                "action_format": "markdown",
                "prefill": "```python\n",
                "max_steps": 1,
                "cell_timeout_s": 20,
                "max_tokens": 32,
            },
            "rollout": {"tasks_per_iteration": 2, "samples_per_task": 2, "concurrency": 4},
            "loop": {"iterations": 3, "tensorboard": False, **loop},
        },
        cls=RLConfig,
    )


def run(cfg: RLConfig, server: FakeOpenAIServer, backend: RecordingBackend, *, resume: bool = False) -> RLRun:
    loop = RLRun(
        cfg,
        resume=resume,
        console=Console(file=io.StringIO()),
        endpoint=FakeEndpoint(server),
        backend=backend,
    )
    anyio.run(loop.run)
    return loop


@pytest.fixture
def server() -> Any:
    with FakeOpenAIServer(arithmetic_responder(), model="policy") as srv:
        yield srv


def versions(folder: RunFolder, iteration: int) -> set[Any]:
    return {t.model.policy_version for t in read_trajectories(folder.trajectories(iteration))}


def test_on_policy_run_records_versions_metrics_checkpoints_and_plots(tmp_path: Path, server: Any) -> None:
    cfg = config(tmp_path / "run")
    backend = RecordingBackend(cfg)
    loop = run(cfg, server, backend)
    folder = loop.folder
    assert [versions(folder, i) for i in (1, 2, 3)] == [{0}, {1}, {2}]  # each batch from the newest policy
    assert len(backend.steps) == 3
    assert backend.closed
    assert [p.name for p in backend.exports] == ["v00000", "v00001", "v00002", "v00003"]
    assert loop._endpoint.published == backend.exports  # type: ignore[union-attr]
    requested = {body["model"] for body in server.requests}
    assert requested == {"policy"}  # the initial (untrained) adapter is published before the first batch
    records = read_metrics(folder.root / "metrics.jsonl")
    assert [r["iteration"] for r in records] == [1, 2, 3]
    for record in records:
        assert all(key in record for key in REQUIRED), sorted(set(REQUIRED) - set(record))
        assert record["episodes"] == 4
        assert record["staleness"] == 0
    assert records[2]["update/loss"] == pytest.approx(0.3)
    state = json.loads(folder.state_path.read_text())
    assert state["iterations_done"] == 3
    assert state["policy_version"] == 3
    assert state["checkpoint"] == "checkpoints/step-000003"
    assert sorted(p.name for p in (folder.root / "checkpoints").iterdir()) == ["step-000002", "step-000003"]
    assert sorted(p.name for p in (folder.root / "adapters").iterdir()) == ["v00002", "v00003"]
    assert (folder.root / "reward.png").is_file()
    assert (folder.root / "metrics.png").is_file()
    assert (folder.root / "config.yaml").is_file()


def test_staleness_lets_collection_run_ahead_within_the_bound(tmp_path: Path, server: Any) -> None:
    cfg = config(tmp_path / "run", iterations=4, staleness=1)
    backend = RecordingBackend(cfg, step_s=2.0)  # training is slow: the next batch is collected meanwhile
    loop = run(cfg, server, backend)
    records = read_metrics(loop.folder.root / "metrics.jsonl")
    lags = [r["staleness"] for r in records]
    assert max(lags) == 1
    assert all(0 <= lag <= 1 for lag in lags)
    for record in records:
        assert versions(loop.folder, record["iteration"]) == {record["policy_version"]}
        assert record["stale_dropped"] == 0
    assert len(backend.steps) == 4


def test_resume_redoes_iterations_after_the_last_checkpoint_without_losing_data(
    tmp_path: Path, server: Any
) -> None:
    cfg = config(tmp_path / "run", iterations=3, checkpoint_every=2)
    first = run(cfg, server, RecordingBackend(cfg))
    folder = first.folder
    kept = folder.trajectories(1).read_bytes()
    # A crash after iteration 3 trained but before its checkpoint was complete:
    checkpoint = folder.checkpoint(3)
    (checkpoint / "trainer_state.json").unlink()
    checkpoint.rename(checkpoint.with_name(".step-000003.partial"))
    requests_before = len(server.requests)
    with pytest.raises(CheckpointError, match="--resume"):
        run(cfg, server, RecordingBackend(cfg))
    resumed_cfg = cfg.model_copy(update={"loop": cfg.loop.model_copy(update={"iterations": 4})})
    backend = RecordingBackend(resumed_cfg)
    loop = run(resumed_cfg, server, backend, resume=True)
    assert [p.name for p in backend.loaded] == ["step-000002"]
    assert folder.trajectories(1).read_bytes() == kept
    records = read_metrics(folder.root / "metrics.jsonl")
    assert [r["iteration"] for r in records] == [1, 2, 3, 4]
    # iteration 3's episodes (sampled from version 2, the restored one) were reused, not sampled again
    assert len(server.requests) - requests_before == 4
    assert len(backend.steps) == 2
    assert versions(folder, 4) == {3}
    aside = [p.name for p in (folder.root / "superseded").iterdir()]
    assert any(name.startswith("metrics-") for name in aside)
    assert json.loads(folder.state_path.read_text())["resumes"] == 1
    assert loop.state.iterations_done == 4


def test_resume_needs_a_run_folder(tmp_path: Path, server: Any) -> None:
    cfg = config(tmp_path / "nothing")
    with pytest.raises(CheckpointError, match="not a run folder"):
        run(cfg, server, RecordingBackend(cfg), resume=True)


def test_other_processes_train_on_the_batches_the_main_one_collected(
    tmp_path: Path, server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = config(tmp_path / "run", iterations=2)
    main = RecordingBackend(cfg)
    run(cfg, server, main)
    requests = len(server.requests)
    metrics = (tmp_path / "run" / "metrics.jsonl").read_text()

    monkeypatch.setenv("RANK", "1")  # as accelerate sets it for a second process
    other = RecordingBackend(cfg, main=False)
    loop = RLRun(cfg, console=Console(file=io.StringIO()), backend=other)  # no endpoint: never serves
    anyio.run(loop.run)
    assert len(server.requests) == requests
    assert [[s.episode_id for s in batch] for batch in other.steps] == [
        [s.episode_id for s in batch] for batch in main.steps
    ]
    assert [[s.advantages for s in batch] for batch in other.steps] == [
        [s.advantages for s in batch] for batch in main.steps
    ]
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == metrics  # only the main process logs
    assert loop.version == 2


class FlakyScoring(MathEnvironment):
    """The math environment, except that scoring fails for the first sample of every task."""

    async def score(self, trajectory: Trajectory) -> Reward:
        if trajectory.sample_index == 0:
            raise OverflowError("integer division result too large for a float")
        return await super().score(trajectory)


def test_an_episode_that_cannot_be_scored_is_counted_and_left_out(tmp_path: Path, server: Any) -> None:
    cfg = config(tmp_path / "run", iterations=1)
    assert cfg.samples.missing_reward == "drop"
    backend = RecordingBackend(cfg)
    output = io.StringIO()
    loop = RLRun(cfg, console=Console(file=output, width=200), endpoint=FakeEndpoint(server), backend=backend,
                 environment=FlakyScoring())  # fmt: skip
    anyio.run(loop.run)
    (record,) = read_metrics(loop.folder.root / "metrics.jsonl")
    assert record["episodes"] == 4
    assert record["unscored"] == 2
    assert record["samples"] == 2
    assert len(backend.steps[0]) == 2
    assert "2 episode(s) could not be scored (first: OverflowError" in output.getvalue()
