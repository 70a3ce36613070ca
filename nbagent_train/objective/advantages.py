"""Advantage estimators: GRPO, Dr. GRPO, RLOO and L0's step-level REINFORCE++, plus dynamic sampling.

Groups are episodes of the same task (`group_id`, else the task id). Failed or timed-out episodes keep the
reward they were given (usually low): they are a learning signal, never dropped here. Each sample gets one
advantage per segment (agent step); every token of a step gets its step's advantage.

- ``grpo``: ``A = (R - mean_g) / (std_g + 1e-4)`` (unbiased std, as TRL), or ``R - mean_g`` without
  std scaling.
- ``dr_grpo``: ``A = R - mean_g`` (pair it with the `constant` loss aggregation).
- ``rloo``: ``A_i = R_i - mean_{j != i} R_j`` (a group of one gets 0).
- ``reinforce_pp``: the reward arrives at the last step, ``G_t = r_t + gamma * G_{t+1}`` so
  ``G_t = gamma^(T-1-t) * R``; returns are whitened over the batch, weighted by scored tokens.
"""

from __future__ import annotations

import math
import random
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from nbagent_train.config.base import AdvantageConfig
from nbagent_train.objective.samples import EpisodeInfo, Sample

STD_EPS = 1e-4
"""Added to the group std before dividing (TRL's constant)."""
WHITEN_EPS = 1e-8


@dataclass
class AdvantageResult:
    """Samples kept (advantages set) and what happened to the groups."""

    samples: list[Sample]
    episodes: list[EpisodeInfo]
    groups: int = 0
    groups_zero_variance: int = 0
    groups_dropped: int = 0
    stats: dict[str, float] = field(default_factory=dict)


def group_episodes(episodes: Sequence[EpisodeInfo]) -> dict[str, list[EpisodeInfo]]:
    """Episodes by group, in first-seen order."""
    groups: dict[str, list[EpisodeInfo]] = defaultdict(list)
    for ep in episodes:
        groups[ep.group_id].append(ep)
    return dict(groups)


def _zero_variance(rewards: Sequence[float]) -> bool:
    return max(rewards) - min(rewards) <= 1e-12


def _unbiased_std(values: Sequence[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def group_relative(rewards: Sequence[float], estimator: str, scale_std: bool) -> list[float]:
    """Episode advantages of one group for `grpo`, `dr_grpo` or `rloo`."""
    n = len(rewards)
    mean = statistics.fmean(rewards)
    if estimator == "rloo":
        if n < 2:
            return [0.0] * n
        return [(r - mean) * n / (n - 1) for r in rewards]
    centred = [r - mean for r in rewards]
    if estimator == "grpo" and scale_std:
        std = _unbiased_std(rewards)
        return [c / (std + STD_EPS) for c in centred]
    return centred


def step_return(reward: float, step_index: int, num_steps: int, gamma: float) -> float:
    """Discounted return of step `step_index` when the whole reward arrives after the last step."""
    return reward * gamma ** max(num_steps - 1 - step_index, 0)


def _whiten(samples: Sequence[Sample]) -> None:
    """Whiten the segment advantages in place, weighting each by its scored tokens (unbiased variance)."""
    total = sum(seg.length for s in samples for seg in s.segments)
    if total == 0:
        return
    mean = (
        sum(a * seg.length for s in samples for a, seg in zip(s.advantages, s.segments, strict=True)) / total
    )
    sq = sum(
        (a - mean) ** 2 * seg.length for s in samples for a, seg in zip(s.advantages, s.segments, strict=True)
    )
    var = sq / (total - 1) if total > 1 else 0.0
    scale = 1.0 / math.sqrt(var + WHITEN_EPS)
    for s in samples:
        s.advantages = [(a - mean) * scale for a in s.advantages]


def compute_advantages(
    samples: Sequence[Sample],
    episodes: Sequence[EpisodeInfo],
    config: AdvantageConfig | None = None,
    rng: random.Random | None = None,
) -> AdvantageResult:
    """Set `advantages` on the samples of one RL batch; drop zero-variance groups if asked.

    `episodes` are all episodes of the batch (also those that produced no sample: they still count in
    their group's baseline). `rng` draws the dynamic-sampling coin flips.
    """
    config = config or AdvantageConfig()
    rng = rng or random.Random(0)
    groups = group_episodes(episodes)
    result = AdvantageResult(samples=[], episodes=[], groups=len(groups))
    kept: dict[str, float] = {}
    for members in groups.values():
        rewards = [ep.reward for ep in members]
        if _zero_variance(rewards):
            result.groups_zero_variance += 1
            if config.dynamic_sampling and rng.random() < config.dynamic_sampling_p:
                result.groups_dropped += 1
                continue
        result.episodes.extend(members)
        if config.estimator == "reinforce_pp":
            kept.update((ep.episode_id, ep.reward) for ep in members)
        else:
            advs = group_relative(rewards, config.estimator, config.scale_std)
            kept.update((ep.episode_id, a) for ep, a in zip(members, advs, strict=True))

    steps_of = {ep.episode_id: ep.num_steps for ep in result.episodes}
    for sample in samples:
        value = kept.get(sample.episode_id)
        if value is None:
            continue
        if config.estimator == "reinforce_pp":
            n = steps_of[sample.episode_id]
            sample.advantages = [
                step_return(value, seg.step_index, n, config.gamma) for seg in sample.segments
            ]
        else:
            sample.advantages = [value] * len(sample.segments)
        result.samples.append(sample)
    if config.estimator == "reinforce_pp" and config.whiten:
        _whiten(result.samples)
    result.stats = _stats(result)
    return result


def _stats(result: AdvantageResult) -> dict[str, float]:
    rewards = [ep.reward for ep in result.episodes]
    advs = [a for s in result.samples for a in s.advantages]
    stats = {
        "groups": float(result.groups),
        "groups_zero_variance": float(result.groups_zero_variance),
        "groups_dropped": float(result.groups_dropped),
        "episodes": float(len(result.episodes)),
        "reward_mean": statistics.fmean(rewards) if rewards else 0.0,
        "reward_std": statistics.pstdev(rewards) if rewards else 0.0,
        "reward_min": min(rewards, default=0.0),
        "reward_max": max(rewards, default=0.0),
        "advantage_mean": statistics.fmean(advs) if advs else 0.0,
        "advantage_std": statistics.pstdev(advs) if advs else 0.0,
        "advantage_min": min(advs, default=0.0),
        "advantage_max": max(advs, default=0.0),
    }
    return stats
