"""Advantage estimators on hand-computed values."""

from __future__ import annotations

import random
import statistics

import pytest

from nbagent_train.config.base import AdvantageConfig
from nbagent_train.objective.advantages import compute_advantages, group_relative, step_return
from nbagent_train.objective.samples import EpisodeInfo, Sample, Segment


def _episode(eid: str, group: str, reward: float, steps: int = 1) -> EpisodeInfo:
    return EpisodeInfo(eid, group, group, reward, steps, "submitted")


def _sample(ep: EpisodeInfo, step: int = 0, length: int = 2) -> Sample:
    return Sample(
        episode_id=ep.episode_id,
        group_id=ep.group_id,
        prompt_ids=[1],
        completion_ids=[2] * length,
        loss_mask=[1] * length,
        behaviour_logprobs=None,
        segments=[Segment(step, 0, length)],
        reward=ep.reward,
    )


def test_grpo_matches_the_formula() -> None:
    rewards = [1.0, 0.0, 0.5, 0.0]
    mean, std = statistics.fmean(rewards), statistics.stdev(rewards)
    assert group_relative(rewards, "grpo", True) == pytest.approx(
        [(r - mean) / (std + 1e-4) for r in rewards]
    )
    assert group_relative(rewards, "grpo", False) == pytest.approx([r - mean for r in rewards])
    assert group_relative(rewards, "dr_grpo", True) == pytest.approx([r - mean for r in rewards])


def test_rloo_uses_the_mean_of_the_others() -> None:
    rewards = [1.0, 0.0, 0.5]
    expected = [r - statistics.fmean(rewards[:i] + rewards[i + 1 :]) for i, r in enumerate(rewards)]
    assert group_relative(rewards, "rloo", True) == pytest.approx(expected)
    assert group_relative([0.7], "rloo", True) == [0.0]


def test_every_step_of_an_episode_gets_its_episode_advantage() -> None:
    eps = [_episode("a", "g", 1.0, steps=3), _episode("b", "g", 0.0, steps=3)]
    samples = [_sample(eps[0], i) for i in range(3)] + [_sample(eps[1], i) for i in range(3)]
    result = compute_advantages(samples, eps, AdvantageConfig(estimator="dr_grpo"))
    assert [s.advantages for s in result.samples] == [[0.5]] * 3 + [[-0.5]] * 3


def test_failed_episodes_push_down_with_their_low_reward() -> None:
    eps = [_episode("ok", "g", 1.0), _episode("timeout", "g", 0.0)]
    result = compute_advantages([_sample(e) for e in eps], eps)
    by_id = {s.episode_id: s.advantages[0] for s in result.samples}
    assert by_id["timeout"] < 0 < by_id["ok"]


def test_reinforce_pp_discounts_from_the_last_step_and_whitens() -> None:
    assert step_return(1.0, 0, 3, 0.95) == pytest.approx(0.95**2)
    assert step_return(1.0, 2, 3, 0.95) == pytest.approx(1.0)
    ep_a = _episode("a", "g1", 1.0, steps=2)
    ep_b = _episode("b", "g2", 0.0, steps=1)
    samples = [_sample(ep_a, 0, length=2), _sample(ep_a, 1, length=2), _sample(ep_b, 0, length=4)]
    raw = compute_advantages(samples, [ep_a, ep_b], AdvantageConfig(estimator="reinforce_pp", whiten=False))
    assert [s.advantages[0] for s in raw.samples] == pytest.approx([0.95, 1.0, 0.0])
    white = compute_advantages(samples, [ep_a, ep_b], AdvantageConfig(estimator="reinforce_pp", gamma=0.5))
    tokens = [a for s in white.samples for a in [s.advantages[0]] * s.num_scored]
    assert statistics.fmean(tokens) == pytest.approx(0.0, abs=1e-9)
    assert statistics.stdev(tokens) == pytest.approx(1.0, abs=1e-6)
    assert white.samples[0].advantages[0] < white.samples[1].advantages[0]  # discounted earlier step


def test_dynamic_sampling_drops_zero_variance_groups() -> None:
    eps = [
        _episode("a", "same", 1.0),
        _episode("b", "same", 1.0),
        _episode("c", "mixed", 1.0),
        _episode("d", "mixed", 0.0),
    ]
    samples = [_sample(e) for e in eps]
    kept = compute_advantages(samples, eps, AdvantageConfig())
    assert len(kept.samples) == 4
    assert kept.groups_zero_variance == 1
    dropped = compute_advantages(samples, eps, AdvantageConfig(dynamic_sampling=True))
    assert {s.group_id for s in dropped.samples} == {"mixed"}
    assert dropped.groups_dropped == 1
    never = compute_advantages(samples, eps, AdvantageConfig(dynamic_sampling=True, dynamic_sampling_p=0.0))
    assert len(never.samples) == 4


def test_dynamic_sampling_probability_is_respected() -> None:
    eps = [_episode(f"{g}-{k}", str(g), 0.0) for g in range(400) for k in range(2)]
    samples = [_sample(e) for e in eps]
    config = AdvantageConfig(dynamic_sampling=True, dynamic_sampling_p=0.5)
    result = compute_advantages(samples, eps, config, random.Random(7))
    assert 150 < result.groups_dropped < 250


def test_episodes_without_samples_still_count_in_the_baseline() -> None:
    eps = [_episode("a", "g", 1.0), _episode("b", "g", 0.0)]
    result = compute_advantages([_sample(eps[0])], eps, AdvantageConfig(estimator="dr_grpo"))
    assert result.samples[0].advantages == [0.5]
