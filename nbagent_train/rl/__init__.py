"""The online RL loop: schedule tasks, collect, train, publish; and before/after evaluation."""

from nbagent_train.rl.loop import (
    RLResult,
    default_run_dir,
    RLRun,
    load_run_config,
    rl,
    reward_trend,
)
from nbagent_train.rl.eval import (
    EvalPlan,
    PolicyScore,
    EvalComparison,
    evaluate_policies,
    render_comparison,
    run_eval,
)

__all__ = [
    "EvalComparison",
    "EvalPlan",
    "PolicyScore",
    "RLResult",
    "RLRun",
    "default_run_dir",
    "evaluate_policies",
    "load_run_config",
    "render_comparison",
    "reward_trend",
    "rl",
    "run_eval",
]
