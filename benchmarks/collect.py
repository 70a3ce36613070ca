"""Collection throughput and kernel memory at several concurrency levels, next to the ideal.

A fake OpenAI-compatible server (tests/fixtures/fake_openai.py, its own process, real HTTP) answers
every call after a fixed latency (200 ms by default) with a scripted 3-step episode: compute in the
kernel, print again, submit from the kernel. With zero overhead, C episodes in flight finish
``C / (steps * latency)`` episodes per second: that ideal is printed next to the measured rate
(steady state: the completions after the first C, so the kernel pool's start-up is reported apart),
with their ratio. Kernel memory is the peak sum of the RSS of the kernel processes during a level.
CPU per episode (this process, its kernels, the fake server) is measured between the first and the
last result; "CPU-bound eps/s" is the best rate the machine's cores allow at that cost.

    .venv/bin/python benchmarks/collect.py                       # levels 1, 8, 32, 64
    .venv/bin/python benchmarks/collect.py --levels 1,8 --latency 0.2 --per-level 6
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nbagent.environments import SimpleEnvironment  # noqa: E402
from nbagent.models.openai import OpenAIModel  # noqa: E402
from nbagent.rollout import agent_for_environment, collect  # noqa: E402
from nbagent.trajectory import TaskSpec, Termination, Trajectory  # noqa: E402

SCRIPT = [
    "<think>I compute the product in Python.</think><code>total = 6 * 7\nprint(total)</code>",
    "<think>Let me check the value once more.</think><code>print('total is', total)</code>",
    "<think>The value is right, so I submit it.</think><code>submit_final_answer(total)</code>",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(latency: float, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    script = workdir / "script.json"
    script.write_text(json.dumps(SCRIPT))
    port = free_port()
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "tests.fixtures.fake_openai"),
            *("--port", str(port), "--latency", str(latency), "--script", str(script)),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                return proc, base + "/v1"
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the fake OpenAI server did not start")


def kernel_processes() -> list[psutil.Process]:
    """This process's Jupyter kernel processes."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if any("ipykernel" in part for part in child.cmdline()):
                found.append(child)
        except psutil.Error:
            continue
    return found


def _sum(procs: list[psutil.Process], measure: Any) -> float:
    total = 0.0
    for proc in procs:
        try:
            total += measure(proc)
        except psutil.Error:
            continue
    return total


def cpu_s(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def snapshot(server: psutil.Process) -> tuple[float, float, float]:
    """CPU seconds used so far by this process, its kernels, and the fake server."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime, _sum(kernel_processes(), cpu_s), cpu_s(server)


async def run_level(
    base_url: str, server: psutil.Process, concurrency: int, episodes: int, workdir: Path
) -> dict[str, Any]:
    tasks = [
        TaskSpec(id=f"t{i:04d}", prompt=f"Task {i}: what is 6 * 7?", references=["42"])
        for i in range(episodes)
    ]
    env = SimpleEnvironment("bench", {"train": tasks}, lambda answer, task: str(answer) == "42")
    model = OpenAIModel("fake-model", base_url=base_url, max_retries=0)
    agent = agent_for_environment(env, model, max_steps=5)
    finished: list[float] = []
    trajs: list[Trajectory] = []
    peak = (0.0, 0)
    cpu: list[tuple[float, float, float]] = []

    def on_result(traj: Trajectory) -> None:
        finished.append(time.monotonic())
        trajs.append(traj)
        if len(finished) in (1, episodes):  # CPU between the first and the last result: no start-up
            cpu.append(snapshot(server))

    async def sample_memory() -> None:
        nonlocal peak
        while True:
            procs = await anyio.to_thread.run_sync(kernel_processes)
            rss = _sum(procs, lambda p: p.memory_info().rss) / 2**20
            peak = max(peak, (rss, len(procs)))
            await anyio.sleep(0.5)

    out = workdir / f"level-{concurrency}.jsonl"
    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        tg.start_soon(sample_memory)
        await collect(env, agent, out=out, concurrency=concurrency, on_result=on_result)
        tg.cancel_scope.cancel()
    wall = time.monotonic() - started
    await model.aclose()
    bad = sum(
        1 for t in trajs if t.termination is not Termination.SUBMITTED or not t.reward or t.reward.total != 1
    )
    skip = min(concurrency, len(finished) - 1)
    steady = (
        (len(finished) - skip - 1) / (finished[-1] - finished[skip]) if finished[-1] > finished[skip] else 0.0
    )
    between = max(1, len(finished) - 1)
    host, kernels, fake = ((b - a) * 1000 / between for a, b in zip(cpu[0], cpu[-1], strict=True))
    return {
        "concurrency": concurrency,
        "episodes": len(trajs),
        "not_solved": bad,
        "wall_s": wall,
        "first_result_s": finished[0] - started,
        "steady_eps": steady,
        "episode_s_median": statistics.median(t.wall_s for t in trajs),
        "kernel_rss_mib": peak[0],
        "kernels": peak[1],
        "cpu_ms": {"host": host, "kernels": kernels, "server": fake},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="1,8,32,64", help="comma-separated concurrency levels")
    parser.add_argument("--latency", type=float, default=0.2, help="seconds per model call")
    parser.add_argument("--per-level", type=int, default=6, help="episodes per level = this x concurrency")
    parser.add_argument("--min-episodes", type=int, default=8)
    args = parser.parse_args()
    steps = len(SCRIPT)
    rows = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        server, base_url = start_server(args.latency, Path(tmp))
        try:
            for level in (int(x) for x in args.levels.split(",")):
                episodes = max(args.min_episodes, args.per_level * level)
                row = anyio.run(run_level, base_url, psutil.Process(server.pid), level, episodes, Path(tmp))
                row["ideal_eps"] = level / (steps * args.latency)
                rows.append(row)
                print(f"  done: concurrency {level}", file=sys.stderr, flush=True)
        finally:
            server.kill()
            server.wait()
    cores = psutil.cpu_count() or 1
    print(f"\ncollect benchmark: {steps}-step episodes, {args.latency * 1000:.0f} ms per model call")
    print(f"{cores} cores, load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    print(f"ideal = concurrency / ({steps} x latency); CPU per episode between the first and last result\n")
    header = (
        "| concurrency | episodes | wall s | first result s | episodes/s | ideal | ratio | median episode s "
        "| kernels | kernel RSS MiB | per kernel | CPU ms/ep host | kernels | server | CPU-bound eps/s |"
    )
    print(header)
    print("|" + "---:|" * (header.count("|") - 1))
    for r in rows:
        cpu = r["cpu_ms"]
        bound = cores * 1000 / max(1e-9, cpu["host"] + cpu["kernels"] + cpu["server"])
        print(
            f"| {r['concurrency']} | {r['episodes']} | {r['wall_s']:.1f} | {r['first_result_s']:.1f} | "
            f"{r['steady_eps']:.2f} | {r['ideal_eps']:.2f} | {r['steady_eps'] / r['ideal_eps']:.0%} | "
            f"{r['episode_s_median']:.2f} | {r['kernels']} | {r['kernel_rss_mib']:.0f} | "
            f"{r['kernel_rss_mib'] / max(1, r['kernels']):.0f} | {cpu['host']:.0f} | {cpu['kernels']:.0f} | "
            f"{cpu['server']:.0f} | {bound:.1f} |"
        )
    failed = sum(r["not_solved"] for r in rows)
    print(f"\nepisodes not solved (should be 0): {failed}")
    print("CPU-bound eps/s = cores / CPU ms per episode (host + kernels + server).")


if __name__ == "__main__":
    main()
