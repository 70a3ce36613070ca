"""Collection on a real local Ray cluster: actors with their own kernel pools, one writer, resume."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nbagent.cli.app import app
from nbagent.cli.collect import EndpointAgentFactory
from nbagent.environments import load_environment
from nbagent.rollout import collect
from nbagent.trajectory import Termination, read_trajectories
from tests.fixtures.fake_openai import FakeOpenAIServer
from tests.rollout.envs import arithmetic_responder, resumed_trajectories

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ENV = "tests.rollout.envs"


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    """A local Ray instance with 2 CPUs. Ray gives its raylet a fixed 30 s to register, which a heavily
    loaded machine can miss: the start is tried three times."""
    ray = pytest.importorskip("ray")
    for attempt in range(3):
        try:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            break
        except Exception:
            ray.shutdown()
            if attempt == 2:
                raise
    yield
    ray.shutdown()


def factory(server: FakeOpenAIServer) -> EndpointAgentFactory:
    return EndpointAgentFactory(base_url=server.base_url, model="fake-model", max_steps=4)


async def test_ray_actors_stream_to_one_writer_and_resume_skips_done_pairs(
    ray_cluster: None, fake_openai_server: FakeOpenAIServer, tmp_path: Path
) -> None:
    fake_openai_server.responder = arithmetic_responder(steps=2)
    env = functools.partial(load_environment, ENV, n=6)
    out = tmp_path / "traj.jsonl"
    local = await collect(env, factory(fake_openai_server), env().tasks("train")[:2], out=out, samples=2)
    assert local.written == 4
    summary = await collect(
        env, factory(fake_openai_server), out=out, samples=2, concurrency=4, resume=True,
        ray="local", ray_actors=2, policy_version=3,
    )  # fmt: skip
    assert (summary.skipped, summary.written, summary.failed) == (4, 8, 0)
    from_ray = resumed_trajectories(out, tasks=6, samples=2, before=4)
    assert len({t.metadata["worker"] for t in from_ray}) == 2  # both actors ran episodes


@pytest.mark.parametrize("actors", [1, 2])
async def test_an_actor_that_dies_is_restarted_and_its_episodes_run_again(
    ray_cluster: None, fake_openai_server: FakeOpenAIServer, tmp_path: Path, actors: int
) -> None:
    fake_openai_server.responder = arithmetic_responder(steps=2)
    marker = tmp_path / "an-actor-died"
    env = functools.partial(load_environment, ENV, n=4, die_once=str(marker))
    out = tmp_path / "traj.jsonl"
    summary = await collect(
        env, factory(fake_openai_server), out=out, samples=2, concurrency=4, ray="local", ray_actors=actors
    )
    assert marker.exists()  # an actor process did die while scoring
    trajs = list(read_trajectories(out))
    assert sorted((t.task.id, t.sample_index) for t in trajs) == [
        (f"add-{i:03d}", s) for i in range(4) for s in range(2)
    ]
    assert all(t.termination is Termination.SUBMITTED for t in trajs)
    assert all(t.reward is not None and t.reward.total == 1.0 for t in trajs)
    assert summary.complete
    assert summary.failed == 0


async def test_an_agent_instance_is_refused_with_ray(
    ray_cluster: None, fake_openai_server: FakeOpenAIServer, tmp_path: Path
) -> None:
    from nbagent.errors import ConfigError

    env = load_environment(ENV, n=2)
    agent = factory(fake_openai_server)(env)
    with pytest.raises(ConfigError, match="function that builds the agent"):
        await collect(env, agent, out=tmp_path / "t.jsonl", ray="local")


def test_collect_cli_on_ray(ray_cluster: None, fake_openai_server: FakeOpenAIServer, tmp_path: Path) -> None:
    fake_openai_server.responder = arithmetic_responder(steps=2)
    out = tmp_path / "traj.jsonl"
    args = ["collect", "--env", ENV, "--env-arg", "n=3", "--samples", "2", "--ray", "local"]
    args += ["--base-url", fake_openai_server.base_url, "--out", str(out), "--no-progress"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "on Ray (local)" in result.output
    assert sorted((t.task.id, t.sample_index) for t in read_trajectories(out)) == [
        (f"add-{i:03d}", s) for i in range(3) for s in range(2)
    ]
