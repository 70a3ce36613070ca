"""What one iteration's episodes did: reward, success, length, terminations and tokens."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from typing import Any

from nbagent.trajectory import Trajectory
from nbagent.trajectory.evaluation import solved

Record = dict[str, Any]


def episode_metrics(
    trajectories: Sequence[Trajectory], *, success_key: str = "answer", success_threshold: float = 1.0
) -> Record:
    """Reward, success, length, termination and token statistics of one batch of episodes.

    An episode succeeds by `nbagent.trajectory.evaluation.solved` (its breakdown's `success_key`, or
    ``"total"``, reaches `success_threshold`), the rule evaluation tables use. Episodes without a
    reward count as reward 0 here and in ``unscored``.
    """
    rewards = [t.reward.total if t.reward is not None else 0.0 for t in trajectories]
    n = len(trajectories)
    out: Record = {
        "episodes": n,
        "unscored": sum(1 for t in trajectories if t.reward is None),
        "reward_mean": statistics.fmean(rewards) if rewards else 0.0,
        "reward_std": statistics.pstdev(rewards) if rewards else 0.0,
        "reward_min": min(rewards, default=0.0),
        "reward_max": max(rewards, default=0.0),
        "success_rate": (
            sum(solved(t, success_key, success_threshold) for t in trajectories) / n if n else 0.0
        ),
    }
    parts: dict[str, list[float]] = {}
    for t in trajectories:
        for key, value in (t.reward.breakdown if t.reward is not None else {}).items():
            parts.setdefault(key, []).append(float(value))
    for key, values in sorted(parts.items()):
        out[f"reward/{key}"] = statistics.fmean(values)
    steps = [len(t.steps) for t in trajectories]
    out["steps_mean"] = statistics.fmean(steps) if steps else 0.0
    out["steps_max"] = max(steps, default=0)
    terminations = Counter(t.termination.value for t in trajectories)
    for reason, count in sorted(terminations.items()):
        out[f"termination/{reason}"] = count / n
    prompt = completion = calls = 0
    format_errors = cell_errors = cells = 0
    for t in trajectories:
        for step in t.steps:
            calls += 1
            call = step.model_call
            prompt += (
                len(call.prompt_token_ids) if call.prompt_token_ids is not None else _usage(call, "prompt")
            )
            completion += (
                len(call.completion_token_ids)
                if call.completion_token_ids is not None
                else _usage(call, "completion")
            )
            format_errors += step.action.kind == "format_error"
            if step.cell is not None:
                cells += 1
                cell_errors += not step.cell.ok
    out["tokens/prompt"] = prompt
    out["tokens/completion"] = completion
    out["tokens/completion_per_call"] = completion / calls if calls else 0.0
    out["format_error_rate"] = format_errors / calls if calls else 0.0
    out["cell_error_rate"] = cell_errors / cells if cells else 0.0
    wall = [t.wall_s for t in trajectories]
    out["episode_wall_s_mean"] = statistics.fmean(wall) if wall else 0.0
    return out


def _usage(call: Any, kind: str) -> int:
    usage = call.usage
    if usage is None:
        return 0
    return int(usage.prompt_tokens if kind == "prompt" else usage.completion_tokens)
