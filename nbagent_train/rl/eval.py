"""`nbagent-train eval`: the base policy and trained weights on the same evaluation tasks, one table.

Each policy is served in turn by one vLLM server (LoRA adapters hot-loaded, full checkpoints by restart),
episodes run through nbagent's collector with the recipe's agent, and `nbagent.trajectory.evaluation.evaluate`
turns the scored trajectories into accuracy numbers. Trajectories go to ``<out>/<policy>.jsonl`` (an
interrupted evaluation resumes from them) and the table to ``<out>/report.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from nbagent.output_files import check_output_folder
from nbagent.trajectory import read_trajectories
from nbagent_train.config.rl import RLConfig
from nbagent_train.errors import TrainConfigError

if TYPE_CHECKING:
    from rich.console import Console

    from nbagent.trajectory.evaluation import DatasetMetrics
    from nbagent_train.backends import ExportResult
    from nbagent_train.serving.endpoint import PolicyEndpoint


@dataclass
class EvalPlan:
    """What `nbagent-train eval` compares."""

    split: str
    limit: int | None
    samples: int
    adapters: list[Path]
    include_base: bool = True
    out: Path = Path("runs/eval")


@dataclass
class PolicyScore:
    """One row of the comparison."""

    name: str
    weights: str
    row: DatasetMetrics
    trajectories: Path


@dataclass
class EvalComparison:
    split: str
    success_key: str
    rows: list[PolicyScore] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "success_key": self.success_key,
            "policies": [
                {
                    "name": r.name,
                    "weights": r.weights,
                    "trajectories": str(r.trajectories),
                    **r.row.model_dump(),
                }
                for r in self.rows
            ],
        }


def export_of(path: Path, base_model: str) -> ExportResult:
    """Describe a weights folder: a PEFT adapter (``adapter_config.json``) or a full HF checkpoint."""
    from nbagent_train.backends import ExportResult

    if (path / "adapter_config.json").is_file():
        return ExportResult(path=path, kind="lora", base_model=base_model)
    if (path / "config.json").is_file():
        return ExportResult(path=path, kind="full", base_model=base_model)
    raise TrainConfigError(f"{path} is neither a LoRA adapter (adapter_config.json) nor an HF model folder")


def _policy_name(path: Path) -> str:
    parent = path.parent.parent.name if path.parent.name == "adapters" else path.parent.name
    return f"{parent}/{path.name}" if parent else path.name


async def evaluate_policies(
    config: RLConfig, plan: EvalPlan, console: Console, endpoint: PolicyEndpoint | None = None
) -> EvalComparison:
    """Serve and evaluate each policy of `plan` in turn (see the module docstring).

    `endpoint` replaces the server the config describes (it is closed at the end either way).
    """
    from nbagent.environments import load_environment
    from nbagent.rollout import collect
    from nbagent.trajectory.evaluation import evaluate
    from nbagent_train.rl.agent import build_agent
    from nbagent_train.serving.endpoint import open_endpoint

    check_output_folder(plan.out, "the evaluation")
    env = load_environment(config.env.name, **config.env.kwargs)
    tasks = list(env.tasks(plan.split))[: plan.limit]
    if not tasks:
        raise TrainConfigError(f"environment {env.name!r} has no tasks in split {plan.split!r}")
    model = config.resolved_model()
    exports = [export_of(Path(p), model) for p in plan.adapters]
    lora = any(e.kind == "lora" for e in exports) or not exports
    plan.out.mkdir(parents=True, exist_ok=True)
    if endpoint is None:
        endpoint = await open_endpoint(config, model, plan.out / "vllm.log", lora=lora)
    comparison = EvalComparison(plan.split, config.env.success_key)
    policies: list[tuple[str, str, ExportResult | None]] = []
    if plan.include_base:
        policies.append(("base", model, None))
    policies += [(_policy_name(e.path), str(e.path), e) for e in exports]
    try:
        for name, weights, export in policies:
            if export is None:
                await endpoint.serve_base()
            else:
                await endpoint.publish(export)
            out = plan.out / f"{name.replace('/', '-')}.jsonl"
            console.print(f"evaluating {name} on {len(tasks)} {plan.split} tasks x {plan.samples}")
            await collect(
                env,
                build_agent(config, env, endpoint),
                tasks,
                out=out,
                split=plan.split,
                samples=plan.samples,
                concurrency=config.rollout.concurrency,
                resume=True,
                max_inflight_requests=config.rollout.max_inflight_requests,
                tag=f"eval-{name}",
                hard_timeout_s=config.rollout.hard_timeout_s,
                progress=console.is_terminal,
            )
            report = evaluate(read_trajectories(out, on_error="skip"), success_metric=config.env.success_key)
            row = report.rows[-1]
            comparison.rows.append(PolicyScore(name, weights, row, out))
    finally:
        await endpoint.aclose()
    return comparison


def render_comparison(comparison: EvalComparison, console: Console) -> None:
    """The before/after table: success (mean@k), pass@k, reward, steps, with the change from the first row."""
    from rich.table import Table

    table = Table(title=f"{comparison.split} split, solved = {comparison.success_key} (%)")
    for column in ["policy", "tasks", "episodes", "mean@k", "pass@k", "reward", "Δ mean@k", "terminations"]:
        table.add_column(column, justify="left" if column in ("policy", "terminations") else "right")
    first = comparison.rows[0].row.mean_at_k if comparison.rows else None
    for score in comparison.rows:
        r = score.row
        delta = "-" if first is None or r.mean_at_k is None else f"{100 * (r.mean_at_k - first):+.1f}"
        table.add_row(
            score.name,
            str(r.tasks),
            str(r.episodes),
            "-" if r.mean_at_k is None else f"{100 * r.mean_at_k:.1f}",
            "-" if r.pass_at_k is None else f"{100 * r.pass_at_k:.1f}",
            "-" if r.reward_mean is None else f"{r.reward_mean:.3f}",
            delta,
            ", ".join(f"{k} {v}" for k, v in sorted(r.terminations.items())),
        )
    console.print(table)


def run_eval(
    config: RLConfig, plan: EvalPlan, *, console: Console, endpoint: PolicyEndpoint | None = None
) -> EvalComparison:
    """Evaluate, print the table and write ``report.json`` (blocking)."""
    comparison = anyio.run(evaluate_policies, config, plan, console, endpoint)
    render_comparison(comparison, console)
    report = plan.out / "report.json"
    report.write_text(json.dumps(comparison.to_dict(), indent=2))
    console.print(f"report: {report}")
    return comparison
