"""The TRL backend on a real tiny Qwen2 (CPU): learning direction, accumulation, checkpoints, exports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")
pytest.importorskip("peft")

from nbagent_train.backends import create_backend  # noqa: E402
from nbagent_train.backends.trl import TRLBackend  # noqa: E402
from nbagent_train.config.base import TrainConfig  # noqa: E402
from nbagent_train.errors import CheckpointError  # noqa: E402
from nbagent_train.objective.advantages import compute_advantages  # noqa: E402
from nbagent_train.objective.samples import Sample, build_samples  # noqa: E402
from tests.fixtures.trajectories import grouped_episodes  # noqa: E402

pytestmark = [pytest.mark.train, pytest.mark.slow]


def _config(model_dir: Path, **sections: Any) -> TrainConfig:
    data: dict[str, Any] = {
        "model": str(model_dir),
        "lora": {"rank": 8},
        "optim": {"learning_rate": 5e-3},
        "run": {"micro_batch_tokens": 4096},
    }
    for key, value in sections.items():
        if isinstance(value, dict):
            data[key] = {**data.get(key, {}), **value}
        else:
            data[key] = value
    return TrainConfig.model_validate(data)


def _batch(tokenizer: Any, config: TrainConfig, mode: str = "per_step") -> list[Sample]:
    config.samples.mode = mode  # type: ignore[assignment]
    built = build_samples(grouped_episodes(tokenizer, groups=2, per_group=4, steps=2), config.samples)
    return compute_advantages(built.samples, built.episodes, config.advantage).samples


def _backend(config: TrainConfig) -> TRLBackend:
    backend = create_backend(config)
    assert isinstance(backend, TRLBackend)
    backend.setup()
    return backend


def _sequence_logps(backend: TRLBackend, samples: list[Sample]) -> list[float]:
    return [
        sum(lp[i] for i, m in enumerate(s.loss_mask) if m)
        for s, lp in zip(samples, backend.score(samples), strict=True)
    ]


def _reference_logps(model: Any, samples: list[Sample]) -> list[list[float]]:
    """Completion logprobs from a plain transformers forward (no TRL head), one sample at a time."""
    out = []
    with torch.no_grad():
        for s in samples:
            ids = torch.tensor([s.prompt_ids + s.completion_ids])
            logits = model(input_ids=ids).logits[0, :-1].float()
            logps = torch.log_softmax(logits, dim=-1).gather(-1, ids[0, 1:, None])[:, 0]
            out.append(logps[-len(s.completion_ids) :].tolist())
    return out


@pytest.mark.parametrize("mode", ["per_step", "merged"])
def test_updates_move_logprobs_with_the_sign_of_the_advantage(
    tiny_model_dir: Path, tiny_tokenizer: Any, mode: str
) -> None:
    config = _config(tiny_model_dir)
    samples = _batch(tiny_tokenizer, config, mode)
    assert {a > 0 for s in samples for a in s.advantages} == {True, False}
    backend = _backend(config)
    before = _sequence_logps(backend, samples)
    for _ in range(3):
        metrics = backend.step(samples)
    after = _sequence_logps(backend, samples)
    assert metrics["optimizer_steps"] == 1
    assert backend.global_step == 3
    for s, b, a in zip(samples, before, after, strict=True):
        if s.advantages[0] > 0:
            assert a > b, (s.advantages, b, a)
        else:
            assert a < b, (s.advantages, b, a)


def test_full_fine_tuning_learns_too(tiny_model_dir: Path, tiny_tokenizer: Any) -> None:
    config = _config(tiny_model_dir, lora={"rank": 0}, optim={"learning_rate": 1e-3}, loss={"kl_coef": 0.05})
    samples = _batch(tiny_tokenizer, config)
    backend = _backend(config)
    assert backend.ref_model is not None
    before = _sequence_logps(backend, samples)
    metrics = [backend.step(samples) for _ in range(3)]
    after = _sequence_logps(backend, samples)
    assert metrics[0]["kl"] == pytest.approx(0.0, abs=1e-6)
    assert metrics[-1]["kl"] > 0
    for s, b, a in zip(samples, before, after, strict=True):
        assert (a > b) == (s.advantages[0] > 0)


def test_token_budget_accumulation_gives_the_same_update(tiny_model_dir: Path, tiny_tokenizer: Any) -> None:
    """One big micro-batch and many small ones must produce the same update.

    With Adam's epsilon at 1 the first update is about lr * g / (|g| + 1), linear in the gradient for small
    gradients, so equal weights mean equal accumulated gradients (not just equal signs).
    """
    results = []
    for budget in (100_000, 1000):
        config = _config(
            tiny_model_dir,
            run={"micro_batch_tokens": budget},
            loss={"kl_coef": 0.01},
            optim={"learning_rate": 1.0, "adam_epsilon": 1.0},
        )
        samples = _batch(tiny_tokenizer, config)
        backend = _backend(config)
        metrics = backend.step(samples)
        assert (metrics["micro_batches"] > 1) == (budget == 1000)
        trainable = {n: p.detach().clone() for n, p in backend.model.named_parameters() if p.requires_grad}
        results.append(trainable)
        backend.close()
    big, small = results
    assert big.keys() == small.keys()
    for name in big:
        assert torch.allclose(big[name], small[name], atol=1e-6), name


@pytest.mark.parametrize("lora_rank", [8, 0])
def test_gradient_checkpointing_gives_the_same_update(
    tiny_model_dir: Path, tiny_tokenizer: Any, lora_rank: int
) -> None:
    results = []
    for checkpointing in (False, True):
        config = _config(
            tiny_model_dir,
            lora={"rank": lora_rank},
            run={"gradient_checkpointing": checkpointing},
            optim={"learning_rate": 1.0, "adam_epsilon": 1.0},
        )
        samples = _batch(tiny_tokenizer, config)[:6]
        backend = _backend(config)
        assert backend.accelerator.unwrap_model(backend.model).is_gradient_checkpointing == checkpointing
        backend.step(samples)
        results.append(
            {n: p.detach().clone() for n, p in backend.model.named_parameters() if p.requires_grad}
        )
        backend.close()
    plain, checkpointed = results
    for name in plain:
        assert torch.allclose(plain[name], checkpointed[name], atol=1e-6), name


def test_mini_batches_and_ppo_epochs(tiny_model_dir: Path, tiny_tokenizer: Any) -> None:
    config = _config(tiny_model_dir, run={"mini_batches": 2, "ppo_epochs": 2}, optim={"learning_rate": 3e-2})
    samples = _batch(tiny_tokenizer, config)
    backend = _backend(config)
    metrics = backend.step(samples)
    assert metrics["optimizer_steps"] == 4
    assert backend.global_step == 4
    assert metrics["ratio_mean"] != pytest.approx(1.0, abs=1e-7)  # later updates see a moved policy


def test_checkpoint_restores_weights_and_optimizer(
    tiny_model_dir: Path, tiny_tokenizer: Any, tmp_path: Path
) -> None:
    config = _config(tiny_model_dir)
    samples = _batch(tiny_tokenizer, config)
    first = _backend(config)
    first.step(samples)
    first.step(samples)
    first.save(tmp_path / "ckpt", {"note": "two steps"})
    assert {"trainer_state.json", "optimizer.bin", "model.safetensors"} <= {
        p.name for p in (tmp_path / "ckpt").iterdir()
    }

    second = _backend(config)
    assert second.load(tmp_path / "ckpt") == {"note": "two steps"}
    assert second.global_step == 2
    assert second.score(samples) == first.score(samples)
    # Same optimizer state: one more identical step keeps them identical (Adam moments included).
    first.step(samples)
    second.step(samples)
    for (n1, p1), (n2, p2) in zip(
        first.model.named_parameters(), second.model.named_parameters(), strict=True
    ):
        assert n1 == n2
        assert torch.equal(p1, p2), n1
    # A LoRA checkpoint holds only the adapter weights.
    saved = (tmp_path / "ckpt" / "model.safetensors").stat().st_size
    assert saved < (tiny_model_dir / "model.safetensors").stat().st_size / 4


def test_loading_a_checkpoint_of_another_kind_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    backend = _backend(_config(tiny_model_dir))
    backend.save(tmp_path / "ckpt")
    full = _backend(_config(tiny_model_dir, lora={"rank": 0}))
    with pytest.raises(CheckpointError, match="LoRA"):
        full.load(tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match="not a complete checkpoint"):
        full.load(tmp_path)


def test_lora_export_loads_in_peft_and_merged_in_transformers(
    tiny_model_dir: Path, tiny_tokenizer: Any, tmp_path: Path
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    config = _config(tiny_model_dir)
    samples = _batch(tiny_tokenizer, config)[:4]
    backend = _backend(config)
    backend.step(samples)
    ours = backend.score(samples)

    adapter = backend.export(tmp_path / "adapter")
    assert adapter.kind == "lora"
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    untrained = _reference_logps(base, samples)
    peft_model = PeftModel.from_pretrained(base, str(tmp_path / "adapter"))
    loaded = _reference_logps(peft_model, samples)

    merged = backend.export(tmp_path / "merged", merged=True)
    assert merged.kind == "full"
    merged_model = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert not any("lora" in name for name in merged_model.state_dict())
    from_merged = _reference_logps(merged_model, samples)

    for mine, theirs, fused, orig in zip(ours, loaded, from_merged, untrained, strict=True):
        assert mine == pytest.approx(theirs, abs=1e-4)
        assert fused == pytest.approx(theirs, abs=1e-4)
        assert mine != pytest.approx(orig, abs=1e-4)


def test_full_export_loads_in_transformers(tiny_model_dir: Path, tiny_tokenizer: Any, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = _config(tiny_model_dir, lora={"rank": 0}, optim={"learning_rate": 1e-3})
    samples = _batch(tiny_tokenizer, config)[:4]
    backend = _backend(config)
    backend.step(samples)
    result = backend.export(tmp_path / "full")
    assert result.kind == "full"
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "full")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "full")
    assert tokenizer.chat_template == tiny_tokenizer.chat_template
    for mine, theirs in zip(backend.score(samples), _reference_logps(model, samples), strict=True):
        assert mine == pytest.approx(theirs, abs=1e-4)
