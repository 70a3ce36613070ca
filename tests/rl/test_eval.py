"""`nbagent-train eval`'s comparison: base and trained weights on the same tasks, one table, a report.
Real kernels, environment and HTTP; the fake OpenAI-compatible server answers differently per model name."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from nbagent_train.config.loading import build_config
from nbagent_train.config.rl import RLConfig
from nbagent_train.errors import TrainConfigError
from nbagent_train.rl.eval import EvalPlan, export_of, run_eval
from tests.fixtures.fake_openai import FakeOpenAIServer
from tests.rl.fakes import FakeEndpoint, expression_of, submission


def respond(body: dict[str, Any]) -> str:
    """The base model submits 0; the adapter submits the right expression."""
    return submission(expression_of(body) if body["model"] == "policy" else "0")


def test_eval_compares_base_and_adapter_on_the_same_tasks(tmp_path: Path) -> None:
    adapter = tmp_path / "run" / "adapters" / "v00003"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    cfg = build_config(
        {
            "model": "fake",
            "env": {"name": "math", "kwargs": {"dataset": "arithmetic"}, "success_key": "correct"},
            "agent": {
                "action_format": "markdown",
                "prefill": "```python\n",
                "max_steps": 1,
                "max_tokens": 32,
            },
            "rollout": {"concurrency": 4},
        },
        cls=RLConfig,
    )
    plan = EvalPlan(split="test", limit=4, samples=2, adapters=[adapter], out=tmp_path / "eval")
    output = io.StringIO()
    with FakeOpenAIServer(respond) as server:
        endpoint = FakeEndpoint(server)
        comparison = run_eval(cfg, plan, console=Console(file=output, width=200), endpoint=endpoint)
        models = [body["model"] for body in server.requests]
    assert [r.name for r in comparison.rows] == ["base", "run/v00003"]
    base, trained = (r.row for r in comparison.rows)
    assert base.tasks == trained.tasks == 4
    assert base.episodes == trained.episodes == 8
    assert base.mean_at_k is not None
    assert trained.mean_at_k is not None
    assert trained.mean_at_k > base.mean_at_k
    assert models[:8] == ["base"] * 8
    assert models[8:] == ["policy"] * 8
    assert endpoint.published == [adapter]
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert [p["name"] for p in report["policies"]] == ["base", "run/v00003"]
    assert "run/v00003" in output.getvalue()


def test_weights_folders_are_recognized_or_named(tmp_path: Path) -> None:
    (tmp_path / "lora").mkdir()
    (tmp_path / "lora" / "adapter_config.json").write_text("{}")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "config.json").write_text("{}")
    assert export_of(tmp_path / "lora", "m").kind == "lora"
    assert export_of(tmp_path / "full", "m").kind == "full"
    with pytest.raises(TrainConfigError, match="neither a LoRA adapter"):
        export_of(tmp_path, "m")
