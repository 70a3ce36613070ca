"""`nbagent collect` on the QA demo set against a real vLLM server (SmolLM2-135M-Instruct)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nbagent.cli.app import app
from nbagent.rollout import group_id_for
from nbagent.trajectory import Termination, read_trajectories
from nbagent_train.serving import PolicyServer

# The first test to use the session's vLLM server also waits for it to start (minutes under load).
pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.timeout(1200)]


def test_collect_qa_demo_on_vllm_gives_scored_grouped_token_exact_episodes(
    vllm_server: PolicyServer, tmp_path: Path
) -> None:
    out = tmp_path / "qa.jsonl"
    args = [
        "collect", "--env", "qa", "--dataset", "demo", "--split", "train", "--limit", "3",
        "--samples", "2", "--concurrency", "4", "--out", str(out), "--no-progress",
        "--base-url", vllm_server.base_url, "--model", vllm_server.served_model_name,
        "--max-steps", "2", "--max-tokens", "48", "--temperature", "1.0",
        "--format", "markdown", "--prefill", "```python\\n", "--policy-version", "0",
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    trajs = list(read_trajectories(out))
    assert len(trajs) == 6
    assert Counter(t.group_id for t in trajs).most_common()[0][1] == 2
    assert {(t.task.id, t.sample_index) for t in trajs} == {(t.task.id, s) for t in trajs for s in range(2)}
    for t in trajs:
        assert t.group_id == group_id_for("qa", t.task.id)
        assert t.environment == "qa"
        assert t.model.base_url == vllm_server.base_url
        assert t.model.policy_version == 0
        assert t.termination in set(Termination)
        assert t.reward is not None
        assert {"exact_match", "f1", "format", "code_execution"} <= set(t.reward.breakdown)
        assert t.steps, t.error
        for step in t.steps:
            call = step.model_call
            assert call.prompt_token_ids
            assert call.completion_token_ids
            assert call.completion_logprobs is not None
            assert len(call.completion_logprobs) == len(call.completion_token_ids)
    assert "6 episodes written" in result.output
