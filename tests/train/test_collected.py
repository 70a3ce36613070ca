"""From `nbagent`'s real collector to trained weights.

Episodes run through the real `Agent` in real Jupyter kernels on the shipped arithmetic environment,
scored by it, written by `collect`; the model is nbagent's `FunctionModel` carrying the tiny tokenizer's
real token ids (scripted actions: look, then submit a right or a wrong answer). `fit` then turns that
file into a LoRA adapter and a full checkpoint, both loaded back with transformers/PEFT.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")

from nbagent.environments import load_environment
from nbagent.models import FunctionModel
from nbagent.rollout import agent_for_environment, collect
from nbagent.trajectory import SamplingSettings, read_trajectories
from nbagent_train.config.base import SampleConfig, TrainConfig
from nbagent_train.fit import fit
from nbagent_train.objective.samples import build_samples

pytestmark = [pytest.mark.train, pytest.mark.slow]


@pytest.fixture(scope="module")
def collected(tiny_tokenizer: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    env = load_environment("math")
    tasks = list(env.tasks("train"))[:2]
    answers = {t.prompt: str(t.references[0]) for t in tasks}
    rng = random.Random(0)

    def policy(messages: list[dict[str, Any]], _: SamplingSettings) -> str:
        question = next(m["content"] for m in messages if m["role"] == "user")
        answer = next(a for p, a in answers.items() if p in question)
        if sum(m["role"] == "assistant" for m in messages) == 0:
            return "<think>Let me look first.</think><code>print('thinking')</code>"
        guess = answer if rng.random() < 0.5 else f"{answer}1"
        return f"<think>Submit it.</think><code>submit_final_answer({guess!r})</code>"

    model = FunctionModel(policy, tokenizer=tiny_tokenizer, name="tiny")
    agent = agent_for_environment(env, model, max_steps=3, cell_timeout_s=30)
    out = tmp_path_factory.mktemp("collect") / "episodes.jsonl"
    import anyio

    summary = anyio.run(lambda: collect(env, agent, tasks, out=out, samples=4, concurrency=2))
    assert summary.planned == 8
    return out


def test_collected_episodes_carry_ids_rewards_and_kernel_outputs(collected: Path) -> None:
    episodes = list(read_trajectories(collected))
    assert len(episodes) == 8
    assert len({e.group_id for e in episodes}) == 2
    for ep in episodes:
        assert ep.reward is not None
        assert len(ep.steps) == 2
        first = ep.steps[0]
        assert first.cell is not None
        assert "thinking" in first.observation
        assert first.model_call.prompt_token_ids is not None
    assert {ep.reward.total for ep in episodes if ep.reward} == {0.0, 1.0}

    per_step = build_samples(episodes)
    assert per_step.summary.samples == 16
    assert per_step.summary.retokenized_steps == 0
    merged = build_samples(episodes, SampleConfig(mode="merged"))
    s = merged.summary
    assert s.merged_steps + s.prefix_breaks == 8  # every second step either joins its first or is counted
    assert s.samples == 16 - s.merged_steps


@pytest.mark.parametrize("lora_rank", [4, 0])
def test_fit_on_collected_episodes_exports_loadable_weights(
    collected: Path, tiny_model_dir: Path, tmp_path: Path, lora_rank: int
) -> None:
    from transformers import AutoModelForCausalLM

    config = TrainConfig.model_validate(
        {
            "model": str(tiny_model_dir),
            "trajectories": [str(collected)],
            "out": str(tmp_path / "run"),
            "lora": {"rank": lora_rank},
            "advantage": {"estimator": "rloo"},
            "run": {"epochs": 2, "tensorboard": False},
            "export_merged": True,
        }
    )
    result = fit(config)
    assert result.iterations == 2
    kinds = [e.kind for e in result.exports]
    if lora_rank:
        assert kinds == ["lora", "full"]
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        PeftModel.from_pretrained(base, str(result.exports[0].path))
    else:
        assert kinds == ["full"]
    model = AutoModelForCausalLM.from_pretrained(result.exports[-1].path)
    original = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    changed = [
        name
        for (name, p), (_, q) in zip(model.named_parameters(), original.named_parameters(), strict=True)
        if not p.detach().equal(q.detach())
    ]
    assert changed
