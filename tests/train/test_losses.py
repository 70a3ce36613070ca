"""Loss terms on fixed tensors (the comparison with TRL's trainer is in test_losses_vs_trl.py)."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from nbagent_train.objective.losses import (  # noqa: E402
    aggregate,
    aggregation_normalizer,
    importance_weights,
    kl_penalty,
    policy_loss,
)


def test_kl_estimators() -> None:
    logp = torch.tensor([[-1.0, -2.0]])
    ref = torch.tensor([[-1.5, -1.0]])
    assert torch.allclose(kl_penalty(logp, ref, "k1"), logp - ref)
    d = ref - logp
    assert torch.allclose(kl_penalty(logp, ref, "k3"), torch.exp(d) - d - 1)
    assert bool((kl_penalty(logp, ref, "k3") >= 0).all())


def test_importance_weights_modes() -> None:
    old = torch.tensor([[0.0, 0.0, 0.0]])
    behaviour = torch.tensor([[0.0, -2.0, float("nan")]])
    mask = torch.ones(1, 3)
    w = importance_weights(old, behaviour, mask, "token_truncate", cap=2.0)
    assert w[0].tolist() == pytest.approx([1.0, 2.0, 1.0])  # exp(2) capped; NaN -> ratio 1
    w = importance_weights(old, behaviour, mask, "token_mask", cap=2.0)
    assert w[0].tolist() == pytest.approx([1.0, 0.0, 1.0])
    w = importance_weights(old, torch.tensor([[-0.1, -0.2, -0.3]]), mask, "sequence_truncate", cap=5.0)
    assert w.shape == (1, 1)
    assert float(w) == pytest.approx(math.exp(0.6))
    floored = importance_weights(old, behaviour, mask, "token_truncate", cap=None, floor=1.5)
    assert floored[0].tolist() == pytest.approx([1.5, math.exp(2.0), 1.5])


def test_on_policy_gradient_is_advantage_weighted_log_likelihood() -> None:
    logp = torch.tensor([[-1.0, -2.0, -0.5]], requires_grad=True)
    adv = torch.tensor([[2.0, 2.0, -1.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    out = policy_loss(logp, logp.detach(), adv, mask, normalizer=2.0)
    out.loss.backward()
    assert logp.grad is not None
    assert logp.grad[0].tolist() == pytest.approx([-1.0, -1.0, 0.0])


def test_clipping_stops_the_gradient_outside_the_trust_region() -> None:
    old = torch.zeros(1, 2)
    logp = torch.tensor([[0.5, -0.5]], requires_grad=True)  # ratios 1.65 and 0.61
    out = policy_loss(
        logp, old, torch.tensor([[1.0, -1.0]]), torch.ones(1, 2), clip_low=0.2, clip_high=0.28, normalizer=2.0
    )
    out.loss.backward()
    assert logp.grad is not None
    assert logp.grad.tolist() == [[0.0, 0.0]]
    assert out.stats.clip_high == 1.0
    assert out.stats.clip_low == 1.0


def test_micro_batches_add_up_to_the_whole_batch() -> None:
    torch.manual_seed(0)
    per_token = torch.randn(4, 5)
    mask = (torch.rand(4, 5) > 0.3).float()
    for agg in ("token_mean", "sequence_mean", "constant"):
        norm = aggregation_normalizer(agg, scored_tokens=float(mask.sum()), sequences=4, constant=5)
        whole = aggregate(per_token, mask, agg, norm)
        parts = aggregate(per_token[:1], mask[:1], agg, norm) + aggregate(per_token[1:], mask[1:], agg, norm)
        assert float(whole) == pytest.approx(float(parts))
    assert float(aggregate(per_token, mask, "token_mean", float(mask.sum()))) == pytest.approx(
        float((per_token * mask).sum() / mask.sum())
    )


def test_kl_term_needs_reference_logprobs() -> None:
    logp = torch.zeros(1, 1)
    with pytest.raises(ValueError, match="reference"):
        policy_loss(logp, logp, torch.ones(1), torch.ones(1, 1), normalizer=1.0, kl_coef=0.1)
