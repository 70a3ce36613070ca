"""Training memory: the LM head scores completion tokens only, micro-batches fit the free memory, a sample
that cannot fit is refused before training."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from nbagent_train.backends import memory  # noqa: E402
from nbagent_train.backends.memory import MemoryBudgetError, MemoryPlan  # noqa: E402
from nbagent_train.backends.trl import TRLBackend  # noqa: E402
from nbagent_train.config.base import TrainConfig  # noqa: E402
from nbagent_train.objective.advantages import compute_advantages  # noqa: E402
from nbagent_train.objective.samples import Sample, build_samples  # noqa: E402
from tests.fixtures.trajectories import grouped_episodes  # noqa: E402

pytestmark = [pytest.mark.train, pytest.mark.slow]


def _samples(tokenizer: Any) -> list[Sample]:
    built = build_samples(grouped_episodes(tokenizer, groups=2, per_group=4, steps=2))
    return compute_advantages(built.samples, built.episodes).samples


def _backend(model_dir: Path, **run: Any) -> TRLBackend:
    config = TrainConfig.model_validate({"model": str(model_dir), "lora": {"rank": 4}, "run": run})
    backend = TRLBackend(config)
    backend.setup()
    return backend


def test_the_lm_head_sees_only_scored_completion_tokens(
    tiny_model_dir: Path, tiny_tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Prompt positions never reach the vocabulary projection, in the forward or in the training step."""
    from trl.kernels import ChunkedLogProbFunction

    rows: list[int] = []
    apply = ChunkedLogProbFunction.apply

    def counting(hidden: torch.Tensor, *args: Any) -> Any:
        rows.append(int(hidden.shape[0]))
        return apply(hidden, *args)

    monkeypatch.setattr(ChunkedLogProbFunction, "apply", counting)
    samples = _samples(tiny_tokenizer)
    backend = _backend(tiny_model_dir, micro_batch_tokens=100_000)
    backend.score(samples)
    assert rows == [sum(len(s.completion_ids) for s in samples)]
    rows.clear()
    backend.step(samples)
    assert rows == [sum(sum(s.loss_mask) for s in samples)]
    assert sum(len(s.prompt_ids) for s in samples) > 3 * rows[0]  # what the head no longer projects


def test_micro_batches_shrink_to_the_free_memory(
    tiny_model_dir: Path,
    tiny_tokenizer: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    samples = _samples(tiny_tokenizer)
    roomy = _backend(tiny_model_dir, micro_batch_tokens=100_000)
    longest = max(s.num_tokens for s in samples)
    free = int(roomy.memory.needed(2 * longest) / memory.HEADROOM)
    monkeypatch.setattr(memory, "_meminfo_available", lambda: free)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    with caplog.at_level(logging.WARNING, logger="nbagent_train"):
        tight = _backend(tiny_model_dir, micro_batch_tokens=100_000)
    assert longest <= tight.token_budget < 100_000
    assert "run.micro_batch_tokens: 100,000 tokens per micro-batch need about" in caplog.text
    assert f"--micro-batch-tokens {tight.token_budget}" in caplog.text
    assert tight.step(samples)["micro_batches"] > roomy.step(samples)["micro_batches"] == 1


def test_a_sample_that_cannot_fit_is_refused_before_training(
    tiny_model_dir: Path, tiny_tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    samples = _samples(tiny_tokenizer)
    monkeypatch.setattr("nbagent_train.backends.trl.free_memory", lambda device: 1)
    backend = _backend(tiny_model_dir, gradient_checkpointing=False)
    longest = max(s.num_tokens for s in samples)
    with pytest.raises(MemoryBudgetError, match=f"a sample of {longest:,} tokens needs about") as caught:
        backend.preflight(samples)
    assert "--gradient-checkpointing" in str(caught.value)
    assert "\n" not in str(caught.value)
    with pytest.raises(MemoryBudgetError):
        backend.step(samples)
    assert backend.global_step == 0


def test_the_estimate_is_linear_in_tokens() -> None:
    plan = MemoryPlan(free=10_000_000, fixed=1_000, per_token=100, per_head_row=10)
    assert plan.needed(200) - plan.needed(100) == plan.needed(300) - plan.needed(200)
    assert plan.fits(plan.token_budget)
    assert not plan.fits(plan.token_budget + 1)
    many = MemoryPlan(free=10**9, fixed=0, per_token=100, per_head_row=10)
    assert many.token_budget > 4096
    assert many.fits(many.token_budget)
    assert not many.fits(many.token_budget + 1)
