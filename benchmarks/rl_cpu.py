"""The CPU learning curve: `nbagent-train rl --config recipes/cpu-smoke.yaml` for real, then a table.

    python benchmarks/rl_cpu.py                         # the full curve (recipe's iterations), new run folder
    python benchmarks/rl_cpu.py --iterations 10         # shorter
    python benchmarks/rl_cpu.py --report runs/smoke     # only print the table of an existing run folder
    python benchmarks/rl_cpu.py --resume runs/smoke     # continue a run that was interrupted

Prints one row per iteration (training reward, success rate, phase times) and the mean training reward
of the first and of the last iterations (a window of `--window` each) with their ratio, plus the wall time.
The baseline is the run's own start: the untrained policy's reward measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nbagent_train.runs.metrics import METRICS_FILE, read_metrics  # noqa: E402


def table(run_dir: Path, window: int) -> str:
    records = sorted(read_metrics(run_dir / METRICS_FILE), key=lambda r: int(r["iteration"]))
    if not records:
        return f"{run_dir}: no iterations recorded"
    lines = [
        f"{'iter':>4} {'reward':>7} {'± std':>6} {'success':>7} {'rollout s':>9} {'train s':>8} "
        f"{'publish s':>9} {'iter s':>7}"
    ]
    for r in records:
        lines.append(
            f"{r['iteration']:>4} {r['reward_mean']:>7.3f} {r['reward_std']:>6.3f} {r['success_rate']:>7.2f} "
            f"{r['time/rollout_s']:>9.1f} {r['time/train_s']:>8.1f} {r['time/publish_s']:>9.1f} "
            f"{r['time/iteration_s']:>7.1f}"
        )
    n = min(window, max(1, len(records) // 2))
    first = statistics.fmean(r["reward_mean"] for r in records[:n])
    last = statistics.fmean(r["reward_mean"] for r in records[-n:])
    first_s = statistics.fmean(r["success_rate"] for r in records[:n])
    last_s = statistics.fmean(r["success_rate"] for r in records[-n:])
    wall = float(records[-1].get("wall_s", 0.0))
    ratio = f"{last / first:.2f}x" if first > 0 else "n/a"
    lines += [
        "",
        f"mean training reward, first {n} iterations: {first:.3f} (success {first_s:.2f})",
        f"mean training reward, last {n} iterations:  {last:.3f} (success {last_s:.2f})",
        f"ratio last / first: {ratio}; {len(records)} iterations in {wall / 60:.1f} min "
        f"(mean {wall / len(records):.0f} s per iteration)",
    ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=ROOT / "recipes" / "cpu-smoke.yaml")
    p.add_argument("--run-dir", type=Path, default=None)
    p.add_argument("--iterations", type=int, default=None)
    p.add_argument("--window", type=int, default=5, help="iterations averaged at each end")
    p.add_argument("--report", type=Path, default=None, help="only print the table of this run folder")
    p.add_argument("--resume", type=Path, default=None, help="continue this run folder, then print")
    p.add_argument("--set", dest="sets", action="append", default=[], help="config override a.b=v")
    args = p.parse_args()
    if args.report is not None:
        print(table(args.report, args.window))
        return
    cli = [sys.executable, "-m", "nbagent_train"]
    if args.resume is not None:
        run_dir = args.resume
        cmd = [*cli, "rl", "--resume", str(run_dir)]
    else:
        run_dir = args.run_dir or ROOT / "runs" / f"cpu-smoke-{time.strftime('%Y%m%d-%H%M%S')}"
        cmd = [*cli, "rl", "--config", str(args.config), "--run-dir", str(run_dir)]
    if args.iterations is not None:
        cmd += ["--iterations", str(args.iterations)]
    for item in args.sets:
        cmd += ["--set", item]
    print("$", " ".join(cmd), flush=True)
    started = time.perf_counter()
    code = subprocess.call(cmd, cwd=ROOT)
    elapsed = time.perf_counter() - started
    print()
    print(table(run_dir, args.window))
    print(f"process wall time (server start and model load included): {elapsed / 60:.1f} min")
    if code != 0:
        sys.exit(code)


if __name__ == "__main__":
    main()
