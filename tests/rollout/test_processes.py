"""Collection in local worker processes (``collect(workers=N)``): real processes, kernels and HTTP."""

from __future__ import annotations

import functools
import multiprocessing
from pathlib import Path

import pytest

from nbagent.cli.collect import EndpointAgentFactory
from nbagent.environments import Environment, load_environment
from nbagent.errors import ConfigError
from nbagent.rollout import EpisodeSettings, RolloutError, collect
from nbagent.rollout.dispatch import per_worker_settings
from nbagent.trajectory import Termination, read_trajectories
from tests.fixtures.fake_openai import FakeOpenAIServer
from tests.rollout.envs import arithmetic_responder, resumed_trajectories

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ENV = "tests.rollout.envs"


def factory(server: FakeOpenAIServer) -> EndpointAgentFactory:
    return EndpointAgentFactory(base_url=server.base_url, model="fake-model", max_steps=4)


def broken_in_workers() -> Environment:
    """The environment, which a worker process cannot build (its data missing there, say)."""
    if multiprocessing.parent_process() is not None:
        raise FileNotFoundError("no such dataset: /nowhere.jsonl")
    return load_environment(ENV, n=2)


async def test_worker_processes_stream_to_one_writer_and_resume_skips_done_pairs(
    fake_openai_server: FakeOpenAIServer, tmp_path: Path
) -> None:
    fake_openai_server.responder = arithmetic_responder(steps=2)
    env = functools.partial(load_environment, ENV, n=6)
    out = tmp_path / "traj.jsonl"
    local = await collect(env, factory(fake_openai_server), env().tasks("train")[:2], out=out, samples=2)
    assert local.written == 4
    summary = await collect(
        env, factory(fake_openai_server), out=out, samples=2, concurrency=4, resume=True, workers=2,
        policy_version=3,
    )  # fmt: skip
    assert (summary.skipped, summary.written, summary.failed) == (4, 8, 0)
    from_workers = resumed_trajectories(out, tasks=6, samples=2, before=4)
    assert len({t.metadata["worker"] for t in from_workers}) == 2  # both processes ran episodes


async def test_a_worker_that_dies_is_started_again_and_its_episodes_run_again(
    fake_openai_server: FakeOpenAIServer, tmp_path: Path
) -> None:
    fake_openai_server.responder = arithmetic_responder(steps=2)
    marker = tmp_path / "a-worker-died"
    env = functools.partial(load_environment, ENV, n=4, die_once=str(marker))
    out = tmp_path / "traj.jsonl"
    summary = await collect(env, factory(fake_openai_server), out=out, samples=2, concurrency=4, workers=2)
    assert marker.exists()  # a worker process did die while scoring
    trajs = list(read_trajectories(out))
    assert sorted((t.task.id, t.sample_index) for t in trajs) == [
        (f"add-{i:03d}", s) for i in range(4) for s in range(2)
    ]
    assert all(t.termination is Termination.SUBMITTED for t in trajs)
    assert summary.complete
    assert summary.failed == 0


@pytest.mark.timeout(120)
async def test_large_jobs_and_results_in_both_directions_at_once_do_not_stall_the_pipes(
    fake_openai_server: FakeOpenAIServer, tmp_path: Path
) -> None:
    """Prompts of 1 MB: each job and each record is bigger than a pipe's buffer, and new jobs go out
    while records come back; neither side's event loop may wait on a full pipe (both would stall)."""
    fake_openai_server.responder = arithmetic_responder(steps=2)
    env = functools.partial(load_environment, ENV, n=32, pad=1_000_000)
    out = tmp_path / "traj.jsonl"
    summary = await collect(env, factory(fake_openai_server), out=out, concurrency=16, workers=2)
    assert (summary.written, summary.failed) == (32, 0)
    trajs = list(read_trajectories(out))
    assert all(t.termination is Termination.SUBMITTED for t in trajs)
    assert all(len(t.task.prompt) > 1_000_000 for t in trajs)


async def test_a_worker_that_cannot_start_is_reported_in_one_error(
    fake_openai_server: FakeOpenAIServer, tmp_path: Path
) -> None:
    out = tmp_path / "traj.jsonl"
    env = load_environment(ENV, n=2)
    with pytest.raises(RolloutError, match="could not start: FileNotFoundError: no such dataset"):
        await collect(broken_in_workers, factory(fake_openai_server), out=out, workers=2)
    with pytest.raises(RolloutError, match="must pickle"):
        await collect(env, lambda e: factory(fake_openai_server)(e), out=out, workers=2)
    assert not out.exists() or out.read_text() == ""


async def test_worker_processes_refuse_an_agent_instance_and_ray_at_once(
    fake_openai_server: FakeOpenAIServer, tmp_path: Path
) -> None:
    env = load_environment(ENV, n=2)
    with pytest.raises(ConfigError, match="function that builds the agent"):
        await collect(env, factory(fake_openai_server)(env), out=tmp_path / "t.jsonl", workers=2)
    with pytest.raises(ConfigError, match="not both"):
        await collect(env, factory(fake_openai_server), out=tmp_path / "t.jsonl", workers=2, ray="local")
    with pytest.raises(ConfigError, match="workers must be at least 1"):
        await collect(env, factory(fake_openai_server), out=tmp_path / "t.jsonl", workers=0)


def test_the_request_limit_is_shared_out_between_workers() -> None:
    settings = EpisodeSettings("train", None, None, max_inflight_requests=5)
    assert per_worker_settings(settings, 2).max_inflight_requests == 3
    assert per_worker_settings(settings, 8).max_inflight_requests == 1
    unlimited = EpisodeSettings("train", None, None, None)
    assert per_worker_settings(unlimited, 4) is unlimited
