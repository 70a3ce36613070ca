"""`collect` on real kernels against the fake OpenAI server over real HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from nbagent.agent.agent import Agent
from nbagent.environments import Environment, SimpleEnvironment
from nbagent.models.openai import OpenAIModel
from nbagent.rollout import OutputExistsError, agent_for_environment, collect, group_id_for
from nbagent.trajectory import CellStatus, TaskSpec, Termination, Trajectory, read_trajectories
from tests.fixtures.fake_openai import FakeOpenAIServer
from tests.rollout.envs import arithmetic_responder, load_environment


def make_agent(server: FakeOpenAIServer, env: Environment, **kwargs: Any) -> Agent[Any, Any]:
    model = OpenAIModel("fake-model", base_url=server.base_url, max_retries=0)
    return agent_for_environment(env, model, max_steps=4, **kwargs)


def pairs(path: Path) -> list[tuple[str, int]]:
    return [(t.task.id, t.sample_index) for t in read_trajectories(path)]


@pytest.fixture
def server(fake_openai_server: FakeOpenAIServer) -> FakeOpenAIServer:
    fake_openai_server.responder = arithmetic_responder(steps=2)
    return fake_openai_server


async def test_every_pair_is_run_scored_grouped_and_written(server: FakeOpenAIServer, tmp_path: Path) -> None:
    env = load_environment(n=5)
    out = tmp_path / "traj.jsonl"
    seen: list[Trajectory] = []
    summary = await collect(
        env,
        make_agent(server, env),
        out=out,
        samples=2,
        concurrency=3,
        policy_version=7,
        on_result=seen.append,
    )
    trajs = list(read_trajectories(out))
    assert sorted(pairs(out)) == [(f"add-{i:03d}", k) for i in range(5) for k in range(2)]
    assert [t.id for t in seen] == [t.id for t in trajs]  # on_result saw each, in file order
    for t in trajs:
        assert t.termination is Termination.SUBMITTED
        assert t.final_answer == t.task.references[0]
        assert t.reward is not None
        assert t.reward.total == 1.0
        assert t.group_id == group_id_for("arith", t.task.id)
        assert (t.environment, t.split, t.model.policy_version) == ("arith", "train", 7)
        assert [s.cell.status for s in t.steps if s.cell] == [CellStatus.OK, CellStatus.OK]
        assert t.task.references[0] in t.steps[0].observation  # the kernel computed the sum
        assert t.steps[0].model_call.completion_token_ids  # the server's token ids are kept
    assert (summary.planned, summary.skipped, summary.written, summary.failed) == (10, 0, 10, 0)
    assert summary.reward_mean == 1.0
    assert summary.complete


async def test_endpoint_errors_and_wrong_answers_are_recorded_and_the_run_goes_on(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    env = load_environment(n=6, boom=2, wrong=1)
    out = tmp_path / "traj.jsonl"
    summary = await collect(env, make_agent(server, env), out=out, samples=2, concurrency=4)
    by_task: dict[str, list[Trajectory]] = {}
    for t in read_trajectories(out):
        by_task.setdefault(t.task.id, []).append(t)
    assert len(by_task) == 6
    assert all(len(group) == 2 for group in by_task.values())
    for t in by_task["add-000"] + by_task["add-001"]:
        assert t.termination is Termination.ERROR
        assert "refuses the prompt" in (t.error or "")
        assert t.reward is not None  # still scored: the answer part is 0
        assert t.reward.breakdown["answer"] == 0.0
    for t in by_task["add-002"]:
        assert t.termination is Termination.SUBMITTED
        assert t.reward is not None
        assert t.reward.total == 0.0
    assert all(
        t.reward is not None and t.reward.total == 1.0 for i in range(3, 6) for t in by_task[f"add-{i:03d}"]
    )
    assert summary.failed == 4
    assert summary.terminations == {"error": 4, "submitted": 8}


async def test_an_agent_factory_is_built_once_and_may_be_used(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    env = load_environment(n=2)
    built: list[Environment] = []

    def factory(e: Environment) -> Agent[Any, Any]:
        built.append(e)
        return make_agent(server, e)

    summary = await collect(env, factory, out=tmp_path / "t.jsonl", samples=2, concurrency=2)
    assert summary.written == 4
    assert built == [env]


async def test_max_inflight_requests_bounds_the_endpoint(server: FakeOpenAIServer, tmp_path: Path) -> None:
    server.latency_s = 0.1
    env = load_environment(n=6)
    await collect(
        env, make_agent(server, env), out=tmp_path / "a.jsonl", concurrency=6, max_inflight_requests=2
    )
    assert server.max_in_flight == 2
    server.max_in_flight = 0
    await collect(env, make_agent(server, env), out=tmp_path / "b.jsonl", concurrency=6)
    assert server.max_in_flight > 2


async def test_resume_runs_only_the_missing_pairs(server: FakeOpenAIServer, tmp_path: Path) -> None:
    env = load_environment(n=6)
    out = tmp_path / "traj.jsonl"
    first = await collect(
        env, make_agent(server, env), env.tasks("train")[:3], out=out, samples=2, concurrency=3
    )
    assert first.written == 6
    with pytest.raises(OutputExistsError):
        await collect(env, make_agent(server, env), out=out, samples=2)
    requests_before = len(server.requests)
    second = await collect(env, make_agent(server, env), out=out, samples=2, concurrency=3, resume=True)
    assert (second.skipped, second.written) == (6, 6)
    assert len(server.requests) - requests_before == 6 * 2  # two model calls per new episode only
    assert sorted(pairs(out)) == [(f"add-{i:03d}", k) for i in range(6) for k in range(2)]
    third = await collect(env, make_agent(server, env), out=out, samples=2, resume=True)
    assert (third.skipped, third.written) == (12, 0)


async def test_a_new_tag_makes_new_groups(server: FakeOpenAIServer, tmp_path: Path) -> None:
    env = load_environment(n=2)
    out = tmp_path / "traj.jsonl"
    await collect(env, make_agent(server, env), out=out, tag="iter-0")
    summary = await collect(env, make_agent(server, env), out=out, tag="iter-1", resume=True)
    assert summary.written == 2
    groups = {t.group_id for t in read_trajectories(out)}
    assert groups == {
        group_id_for("arith", f"add-{i:03d}", tag) for i in range(2) for tag in ("iter-0", "iter-1")
    }


async def test_hard_timeout_records_a_timeout_with_the_steps_done(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    env = load_environment(n=2)
    server.latency_s = lambda body: 30.0 if len(body["messages"]) > 2 else 0.0  # the 2nd call hangs
    out = tmp_path / "traj.jsonl"
    summary = await collect(env, make_agent(server, env), out=out, concurrency=2, hard_timeout_s=3.0)
    trajs = list(read_trajectories(out))
    assert len(trajs) == 2
    for t in trajs:
        assert t.termination is Termination.TIMEOUT
        assert "hard limit of 3.0 s" in (t.error or "")
        assert len(t.steps) == 1  # the first step was kept
    assert summary.failed == 2


async def test_a_scoring_failure_keeps_the_episode(server: FakeOpenAIServer, tmp_path: Path) -> None:
    def broken_check(answer: Any, task: TaskSpec) -> float:
        raise RuntimeError("the grader is down")

    env = SimpleEnvironment("arith", {"train": load_environment(n=2).tasks("train")}, broken_check)
    out = tmp_path / "traj.jsonl"
    summary = await collect(env, make_agent(server, env), out=out)
    trajs = list(read_trajectories(out))
    assert [t.termination for t in trajs] == [Termination.SUBMITTED] * 2
    assert all(t.reward is None and "grader is down" in t.metadata["score_error"] for t in trajs)
    assert summary.failed == 2
    assert summary.reward_mean is None


async def test_progress_bar_reports_done_failed_and_reward(
    server: FakeOpenAIServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = load_environment(n=2, boom=1)
    await collect(env, make_agent(server, env), out=tmp_path / "t.jsonl", progress=True)
    err = capsys.readouterr().err
    assert "2/2" in err
    assert "failed 1" in err
    assert "reward 0.500" in err  # one solved (1.0), one endpoint error (0.0)


async def test_cancelling_a_collection_keeps_finished_episodes(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    env = load_environment(n=8)
    server.latency_s = lambda body: 0.0 if "What is 0 +" in body["messages"][1]["content"] else 60.0
    out = tmp_path / "traj.jsonl"
    with anyio.CancelScope() as scope:
        await collect(
            env, make_agent(server, env), out=out, concurrency=4, on_result=lambda t: scope.cancel()
        )
    assert scope.cancelled_caught
    assert pairs(out) == [("add-000", 0)]  # the finished episode; the cancelled ones are not written


async def test_kernels_that_cannot_start_fail_the_run_plainly_before_any_episode(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    from nbagent.errors import KernelError
    from nbagent.kernel import KernelConfig

    tasks = load_environment(n=2).tasks("train")
    env = SimpleEnvironment(
        "arith", {"train": tasks}, lambda a, t: 1.0, kernel_config=KernelConfig(memory_limit_mb=1)
    )
    out = tmp_path / "traj.jsonl"
    with pytest.raises(KernelError, match="failed to start"):
        await collect(env, make_agent(server, env), out=out, concurrency=2)
    assert not out.exists() or out.read_text() == ""
    assert server.requests == []


def test_a_collections_pool_holds_the_agents_kernel_side_modules() -> None:
    """Forked, its template loads them, so a kernel's first episode sends no module."""
    from nbagent.agent.kernel_side import kernel_modules
    from nbagent.rollout.local import episode_pool

    pool = episode_pool(None, 2)
    assert pool.modules == dict(kernel_modules())
    assert set(pool.modules) == {"_nbagent_notepad", "_nbagent_tools"}
