"""The online RL loop: schedule tasks, collect, train, publish; and before/after evaluation."""

from nbagent_train.rl.eval import (
    EvalComparison,
    EvalPlan,
    PolicyScore,
    evaluate_policies,
    render_comparison,
    run_eval,
)
from nbagent_train.rl.loop import (
    RLRun,
    rl,
)
from nbagent_train.rl.record import (
    IterationRecord,
    RLResult,
    reward_trend,
)
from nbagent_train.runs.folder import default_run_dir, load_run_config

__all__ = [
    "EvalComparison",
    "EvalPlan",
    "IterationRecord",
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
