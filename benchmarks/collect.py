"""Collection throughput and kernel memory at several concurrency levels, next to the ideal.

A fake OpenAI-compatible server (tests/fixtures/fake_openai.py, its own process, real HTTP) answers
every call after a fixed latency (200 ms by default) with a scripted 3-step episode: compute in the
kernel, print again, submit from the kernel. With zero overhead, C episodes in flight finish
``C / (steps * latency)`` episodes per second: that ideal is printed next to the measured rate
(episodes over the time from the first episode's start to the last result, so the kernel pool's
start-up is reported apart; use a whole number of waves, ``--per-level``), with their ratio, and the
ratio's two factors (Little's law): the mean share of the concurrency in flight, and the ideal
episode time over the mean one.
``--workers N`` runs the episodes in N local worker processes (``collect(workers=N)``) and
``--ray-actors N`` on N actors of a local Ray instance, instead of this process (both fork their
kernels where bubblewrap works, whatever ``--start`` says). Memory: the RSS
and PSS (shared pages split between the processes sharing them) of every process the level started
(kernels, their template, bwrap; Ray's actors and services), read once all episodes are in flight
and again at the last result, and the machine's peak used memory above what it used before the
level (once that stopped falling: a level that just ended frees memory for a while). CPU per episode
(this process; the level's other processes; the fake server; the kernel's same-page merging thread
ksmd) is measured between the first and the last result; "CPU-bound eps/s"
is the best rate the machine's cores allow at that cost. Each level runs with launched kernels (the
baseline) and forked ones (``--start``), in the same run. Kernels are sandboxed, as ``nbagent
collect`` runs them (``--no-sandbox``: not); ``--merge-memory`` sets `KernelConfig.merge_memory`
(KSM must be running).

    .venv/bin/python benchmarks/collect.py                       # levels 1, 8, 32, 64
    .venv/bin/python benchmarks/collect.py --levels 64,256 --latency 2 --per-level 3
"""

from __future__ import annotations

import argparse
import functools
import itertools
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
from nbagent.kernel import KernelConfig, KernelPool  # noqa: E402
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


def kernel_processes(before: set[int], server: psutil.Process) -> list[psutil.Process]:
    """Every process the level started (this process's descendants not running in `before`):
    kernels, their templates and bwrap, worker processes, and with Ray its actors and services. The
    fake server is not counted, nor any other process of the machine (one that ends during the level
    would make its CPU look negative)."""
    skip = before | {server.pid}
    return [proc for proc in psutil.Process().children(recursive=True) if proc.pid not in skip]


def used_memory_mib() -> float:
    """The machine's used memory (total less available)."""
    fields = {}
    with open("/proc/meminfo") as f:
        for line in f:
            name, value = line.split(":")
            fields[name] = int(value.split()[0])
    return (fields["MemTotal"] - fields["MemAvailable"]) / 1024


def settled_used_memory_mib(limit_s: float = 60.0) -> float:
    """`used_memory_mib` once it stopped falling (a level that just ended frees its kernels' memory
    for a while after its processes exit): the baseline a level's memory is measured above."""
    used = used_memory_mib()
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        time.sleep(1)
        now = used_memory_mib()
        if now > used - 16:  # fell by less than 16 MiB in a second
            return now
        used = now
    return used_memory_mib()


def memory_of(procs: list[psutil.Process]) -> tuple[float, float]:
    """Summed RSS and PSS of `procs`, in MiB."""
    rss = pss = 0.0
    for proc in procs:
        try:
            info = proc.memory_full_info()
        except psutil.Error:
            continue
        rss += info.rss / 2**20
        pss += info.pss / 2**20
    return rss, pss


def _sum(procs: list[psutil.Process], measure: Any) -> float:
    total = 0.0
    for proc in procs:
        try:
            total += measure(proc)
        except psutil.Error:
            continue
    return total


def cpu_s(proc: psutil.Process) -> float:
    """CPU seconds of `proc` and of its children that ended (a template's restarted forks)."""
    times = proc.cpu_times()
    return float(times.user + times.system + times.children_user + times.children_system)


def ksmd() -> list[psutil.Process]:
    """The kernel's same-page merging thread, where this kernel has one."""
    return [proc for proc in psutil.process_iter(["name"]) if proc.info["name"] == "ksmd"]


def ksm_state() -> str:
    """Whether the kernel's same-page merging runs, and how fast it scans."""
    folder = Path("/sys/kernel/mm/ksm")
    if not folder.is_dir():
        return "KSM: not in this kernel"
    run, pages, sleep = (
        (folder / name).read_text().strip() for name in ("run", "pages_to_scan", "sleep_millisecs")
    )
    return f"KSM: run={run}, pages_to_scan={pages}, sleep_millisecs={sleep}"


def snapshot(before: set[int], server: psutil.Process) -> tuple[float, float, float, float]:
    """CPU seconds used so far by this process, the level's other processes, the fake server and ksmd."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    return (
        own.ru_utime + own.ru_stime, _sum(kernel_processes(before, server), cpu_s), cpu_s(server),
        _sum(ksmd(), cpu_s),
    )  # fmt: skip


def is_42(answer: object, task: TaskSpec) -> bool:
    return str(answer) == "42"


def bench_env(episodes: int) -> SimpleEnvironment:
    tasks = [
        TaskSpec(id=f"t{i:04d}", prompt=f"Task {i}: what is 6 * 7?", references=["42"])
        for i in range(episodes)
    ]
    return SimpleEnvironment("bench", {"train": tasks}, is_42)


def bench_agent(env: SimpleEnvironment, *, base_url: str, kernel_config: KernelConfig) -> Any:
    """The agent of every episode (a function of the environment: Ray actors build their own)."""
    model = OpenAIModel("fake-model", base_url=base_url, max_retries=0)
    return agent_for_environment(env, model, max_steps=5, kernel_config=kernel_config)


async def run_level(
    base_url: str,
    server: psutil.Process,
    concurrency: int,
    episodes: int,
    workdir: Path,
    start: str,
    kernel_config: KernelConfig,
    ray_actors: int,
    workers: int,
) -> dict[str, Any]:
    before = {proc.pid for proc in psutil.process_iter()}
    finished: list[float] = []
    trajs: list[Trajectory] = []
    memory: dict[str, float] = {}
    cpu: list[tuple[float, float, float, float]] = []
    baseline = settled_used_memory_mib()
    peak_used = 0.0
    acquired: list[float] = []

    def on_result(traj: Trajectory) -> None:
        finished.append(time.monotonic())
        trajs.append(traj)
        if len(finished) == 1:  # everything in flight: memory, read before the CPU window opens
            procs = kernel_processes(before, server)
            memory["rss"], memory["pss"] = memory_of(procs)
            memory["processes"] = len(procs)
        if len(finished) == episodes:  # the kernels, still alive, after the whole run
            memory["pss_end"] = memory_of(kernel_processes(before, server))[1]
            memory["used_end"] = used_memory_mib() - baseline
        if len(finished) in (1, episodes):  # CPU between the first and the last result: no start-up
            cpu.append(snapshot(before, server))

    async def sample_memory() -> None:
        nonlocal peak_used
        while True:
            peak_used = max(peak_used, used_memory_mib() - baseline)
            await anyio.sleep(1)

    original_lease = KernelPool.lease

    def timed_lease(pool: KernelPool) -> Any:
        asked = time.monotonic()
        inner = original_lease(pool)

        class Timed:
            async def __aenter__(self) -> Any:
                kernel = await inner.__aenter__()
                acquired.append(time.monotonic() - asked)
                return kernel

            async def __aexit__(self, *exc: Any) -> Any:
                return await inner.__aexit__(*exc)

        return Timed()

    original_init = KernelPool.__init__

    def init_with_start(pool: KernelPool, *args: Any, **kwargs: Any) -> None:
        original_init(pool, *args, **{**kwargs, "start": start})

    out = workdir / f"level-{concurrency}-{start}-{workers}-{ray_actors}.jsonl"
    started = time.monotonic()
    KernelPool.lease = timed_lease  # type: ignore[method-assign,assignment]
    KernelPool.__init__ = init_with_start  # type: ignore[method-assign,assignment]
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(sample_memory)
            env = functools.partial(bench_env, episodes)
            agent = functools.partial(bench_agent, base_url=base_url, kernel_config=kernel_config)
            if ray_actors:
                await collect(
                    env, agent, out=out, concurrency=concurrency, on_result=on_result,
                    ray="local", ray_actors=ray_actors,
                )  # fmt: skip
            elif workers > 1:
                await collect(
                    env, agent, out=out, concurrency=concurrency, on_result=on_result, workers=workers
                )
            else:
                await collect(env(), agent, out=out, concurrency=concurrency, on_result=on_result)
            tg.cancel_scope.cancel()
    finally:
        KernelPool.lease = original_lease  # type: ignore[method-assign]
        KernelPool.__init__ = original_init  # type: ignore[method-assign]
    wall = time.monotonic() - started
    bad = sum(
        1 for t in trajs if t.termination is not Termination.SUBMITTED or not t.reward or t.reward.total != 1
    )
    between = max(1, len(finished) - 1)
    host, kernels, fake, merging = ((b - a) * 1000 / between for a, b in zip(cpu[0], cpu[-1], strict=True))
    waits = sorted(acquired)  # none with workers or Ray: they lease their kernels
    # The first episode's start, from its result (the same for local runs and Ray actors).
    first_start = min(at - traj.wall_s for at, traj in zip(finished, trajs, strict=True))
    window = max(1e-9, finished[-1] - first_start)
    return {
        "throughput_eps": len(finished) / window,
        # Little's law: throughput = mean episodes in flight / mean episode time, so the ratio to
        # the ideal splits into occupancy (in flight / concurrency) x speed (ideal / mean episode).
        "in_flight": sum(t.wall_s for t in trajs) / window,
        "episode_s_mean": statistics.mean(t.wall_s for t in trajs),
        "start": f"{start}, {ray_actors} Ray actors"
        if ray_actors
        else f"{start}, {workers} workers"
        if workers > 1
        else start,
        "acquire_ms": (1000 * waits[len(waits) // 2], 1000 * waits[int(len(waits) * 0.99)])
        if waits
        else None,
        "memory": memory,
        "peak_used_mib": peak_used,
        "concurrency": concurrency,
        "episodes": len(trajs),
        "not_solved": bad,
        "wall_s": wall,
        "first_result_s": finished[0] - started,
        "episode_s_median": statistics.median(t.wall_s for t in trajs),
        "cpu_ms": {"host": host, "kernels": kernels, "server": fake, "ksmd": merging},
    }


def table_row(r: dict[str, Any], cores: int) -> str:
    cpu, mem = r["cpu_ms"], r["memory"]
    bound = cores * 1000 / max(1e-9, sum(cpu.values()))
    acquire = "n/a" if r["acquire_ms"] is None else f"{r['acquire_ms'][0]:.1f} / {r['acquire_ms'][1]:.1f}"
    return (
        f"| {r['concurrency']} | {r['start']} | {r['episodes']} | {r['first_result_s']:.1f} | "
        f"{r['throughput_eps']:.2f} | {r['ideal_eps']:.2f} | "
        f"{r['throughput_eps'] / r['ideal_eps']:.0%} | "
        f"{r['in_flight'] / r['concurrency']:.0%} | {r['ideal_episode_s'] / r['episode_s_mean']:.0%} | "
        f"{r['episode_s_median']:.2f} | {mem['processes']:.0f} | {mem['rss']:.0f} | {mem['pss']:.0f} | "
        f"{mem['pss'] / r['concurrency']:.1f} | {mem['pss_end'] / r['concurrency']:.1f} | "
        f"{r['peak_used_mib']:.0f} | {mem['used_end']:.0f} | "
        f"{acquire} | {cpu['host']:.1f} | "
        f"{cpu['kernels']:.1f} | {cpu['server']:.1f} | {cpu['ksmd']:.1f} | {bound:.1f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="1,8,32,64", help="comma-separated concurrency levels")
    parser.add_argument("--latency", type=float, default=0.2, help="seconds per model call")
    parser.add_argument("--per-level", type=int, default=6, help="episodes per level = this x concurrency")
    parser.add_argument("--min-episodes", type=int, default=8)
    parser.add_argument("--start", default="launch,fork", help="kernel start modes to run, in order")
    parser.add_argument("--no-sandbox", action="store_true", help="kernels outside the bubblewrap sandbox")
    parser.add_argument("--merge-memory", action="store_true", help="KernelConfig.merge_memory (KSM)")
    parser.add_argument("--ray-actors", type=int, default=0, help="run on this many local Ray actors")
    parser.add_argument(
        "--workers", default="1", help="comma-separated counts of local worker processes to run, in order"
    )
    args = parser.parse_args()
    kernel_config = KernelConfig(sandbox=not args.no_sandbox, merge_memory=args.merge_memory)
    steps = len(SCRIPT)
    rows = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        server, base_url = start_server(args.latency, Path(tmp))
        try:
            for level in (int(x) for x in args.levels.split(",")):
                for start, workers in itertools.product(args.start.split(","), args.workers.split(",")):
                    episodes = max(args.min_episodes, args.per_level * level)
                    proc = psutil.Process(server.pid)
                    row = anyio.run(
                        run_level,
                        base_url,
                        proc,
                        level,
                        episodes,
                        Path(tmp),
                        start,
                        kernel_config,
                        args.ray_actors,
                        int(workers),
                    )
                    row["ideal_eps"] = level / (steps * args.latency)
                    row["ideal_episode_s"] = steps * args.latency
                    rows.append(row)
                    print(f"  done: {table_row(row, psutil.cpu_count() or 1)}", file=sys.stderr, flush=True)
        finally:
            server.kill()
            server.wait()
    cores = psutil.cpu_count() or 1
    print(f"\ncollect benchmark: {steps}-step episodes, {args.latency * 1000:.0f} ms per model call")
    print(f"{cores} cores, load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    print(f"kernels: {kernel_config!r}; {ksm_state()}")
    print(f"ideal = concurrency / ({steps} x latency); CPU per episode between the first and last result\n")
    header = (
        "| concurrency | kernels | episodes | first result s | episodes/s | ideal | ratio | in flight "
        "| speed | median episode s "
        "| processes | RSS MiB | PSS MiB | PSS per episode | at end | machine +MiB | at end "
        "| acquire p50 / p99 ms | CPU ms/ep host | kernels | server | ksmd | CPU-bound eps/s |"
    )
    print(header)
    print("|" + "---:|" * (header.count("|") - 1))
    for r in rows:
        print(table_row(r, cores))
    failed = sum(r["not_solved"] for r in rows)
    print(f"\nepisodes not solved (should be 0): {failed}")
    print("ratio = in flight x speed: in flight = mean episodes in flight (their summed time over the")
    print("window) / concurrency, below 100% when kernels sit idle (between two episodes, and at the end")
    print("when no task is left); speed = ideal episode time (steps x latency) / mean episode time.")
    print("CPU-bound eps/s = cores / CPU ms per episode (host + kernels + server + ksmd). kernels: every")
    print("process the level started (kernels, template, bwrap; worker processes or Ray's actors, which run")
    print("the episodes, and Ray's services). PSS per episode: their PSS over the concurrency, once all are")
    print("in flight and at the last result. machine +MiB: peak used memory of the machine above its use")
    print("before the level (host included), and the same at the last result.")


if __name__ == "__main__":
    main()
