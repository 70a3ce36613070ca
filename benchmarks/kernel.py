"""Benchmark of the notebook runtime: start, cell round trip, tool calls, pooled throughput, isolation.

Run: ``.venv/bin/python benchmarks/kernel.py`` (``--help`` for options). Every nbagent number is printed
next to a baseline measured in the same run: a bare jupyter_client kernel driven by
``execute_interactive`` (the floor), or a trivial cell on the same kernel. Rounds alternate between
the two sides so that machine noise hits both alike.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager

from nbagent.kernel import Kernel, KernelConfig, KernelPool
from nbagent.kernel.launch import LEAN_KERNEL, bwrap_unusable
from nbagent.tools import tool
from nbagent.tools.bridge import ToolBridge

Timed = Callable[[], Awaitable[Any]]


@tool(run_in_thread=False)
def echo(value: int) -> int:
    """Return the value unchanged."""
    return value


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _time(fn: Timed) -> float:
    started = time.perf_counter()
    await fn()
    return time.perf_counter() - started


async def _alternate(a: Timed, b: Timed, runs: int, block: int = 10) -> tuple[list[float], list[float]]:
    """Time `a` and `b` `runs` times each, in alternating blocks, after a warm-up."""
    for _ in range(5):
        await a()
        await b()
    times_a: list[float] = []
    times_b: list[float] = []
    while len(times_a) < runs:
        for _ in range(block):
            times_a.append(await _time(a))
        for _ in range(block):
            times_b.append(await _time(b))
    return times_a[:runs], times_b[:runs]


class BareKernel:
    """The floor: jupyter_client's own kernel manager and execute_interactive, nothing else. The
    kernel runs with the same ipykernel options as nbagent's (no history database), so the two differ
    only in what nbagent adds. `lean`: the kernel is nbagent's `lean_kernel` instead of stock
    ipykernel (its own kernel spec in `spec_dir`), which isolates what that kernel changes."""

    def __init__(
        self, *, lean: bool = False, spec_dir: Path | None = None, packer: str | None = None
    ) -> None:
        self.packer = packer  # jupyter_client's message serializer on both sides; None: its default
        if not lean:
            self.km = AsyncKernelManager(kernel_name="python3", transport="ipc")
            return
        assert spec_dir is not None
        folder = spec_dir / "nbagent-lean"
        folder.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-P", str(LEAN_KERNEL), "-f", "{connection_file}"]
        (folder / "kernel.json").write_text(json.dumps({"argv": argv, "language": "python"}))
        specs = KernelSpecManager(kernel_dirs=[str(spec_dir)])
        self.km = AsyncKernelManager(kernel_name="nbagent-lean", transport="ipc", kernel_spec_manager=specs)

    async def start(self) -> None:
        options = ["--HistoryManager.enabled=False"]
        if self.packer is not None:
            self.km.session.packer = self.packer
            options.append(f"--Session.packer={self.packer}")
        await self.km.start_kernel(extra_arguments=options)
        self.kc = self.km.client()
        self.kc.start_channels()
        await self.kc.wait_for_ready(timeout=60)

    async def execute(self, code: str) -> dict[str, Any]:
        reply: dict[str, Any] = await self.kc.execute_interactive(
            code, output_hook=lambda msg: None, timeout=60
        )
        return reply

    async def shutdown(self) -> None:
        self.kc.stop_channels()
        await self.km.shutdown_kernel(now=True)


Row = tuple[str, str, str, str]


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


async def bench_start(starts: int) -> list[Row]:
    ours: list[float] = []
    bare: list[float] = []
    for _ in range(starts):
        kernel = Kernel()
        ours.append(await _time(kernel.start))
        await kernel.shutdown()
        floor = BareKernel()
        bare.append(await _time(floor.start))
        await floor.shutdown()
    ratio = statistics.median(ours) / statistics.median(bare)
    return [
        (
            "kernel start (median)",
            _ms(statistics.median(ours)),
            f"bare AsyncKernelManager {_ms(statistics.median(bare))}",
            f"{ratio:.2f}x",
        )
    ]


async def bench_cells(runs: int) -> list[Row]:
    bare = BareKernel()
    await bare.start()
    try:
        async with Kernel() as kernel:
            ours, floor = await _alternate(lambda: kernel.execute("1"), lambda: bare.execute("1"), runs)
            bridge = ToolBridge([echo])
            await bridge.install(kernel)
            one_call, trivial = await _alternate(
                lambda: bridge.run_cell(kernel, "echo(1)"), lambda: kernel.execute("1"), runs
            )
            loop_calls = 100
            loop_result = await bridge.run_cell(kernel, f"for i in range({loop_calls}): echo(i)")
            assert len(loop_result.tool_calls) == loop_calls, loop_result
            loop_times = [
                await _time(lambda: bridge.run_cell(kernel, f"for i in range({loop_calls}): echo(i)"))
                for _ in range(5)
            ]
    finally:
        await bare.shutdown()
    per_call = (statistics.median(loop_times) - statistics.median(trivial)) / loop_calls
    return [
        (
            "trivial cell `1` (median)",
            _ms(statistics.median(ours)),
            f"bare execute_interactive {_ms(statistics.median(floor))}",
            f"{statistics.median(ours) / statistics.median(floor):.2f}x",
        ),
        (
            "trivial cell `1` (p90)",
            _ms(_p(ours, 0.9)),
            f"bare execute_interactive {_ms(_p(floor, 0.9))}",
            f"{_p(ours, 0.9) / _p(floor, 0.9):.2f}x",
        ),
        (
            "cell with one tool call (median)",
            _ms(statistics.median(one_call)),
            f"trivial cell {_ms(statistics.median(trivial))}",
            f"{statistics.median(one_call) / statistics.median(trivial):.2f}x",
        ),
        (
            "one tool call inside a loop of 100",
            _ms(per_call),
            f"trivial cell {_ms(statistics.median(trivial))}",
            f"{per_call / statistics.median(trivial):.2f}x",
        ),
    ]


async def _bare_pair(ours: BareKernel, theirs: BareKernel, runs: int, what: str, baseline: str) -> Row:
    """`x = 6 * 7; print(x)` from the bare client on two kernels, rounds alternating."""
    await ours.start()
    await theirs.start()
    try:
        code = "x = 6 * 7\nprint(x)"
        a, b = await _alternate(lambda: ours.execute(code), lambda: theirs.execute(code), runs)
    finally:
        await ours.shutdown()
        await theirs.shutdown()
    return (
        f"{what}, `x = 6 * 7; print(x)` (median)",
        _ms(statistics.median(a)),
        f"{baseline} {_ms(statistics.median(b))}",
        f"{statistics.median(a) / statistics.median(b):.2f}x",
    )


async def bench_lean_kernel(runs: int) -> list[Row]:
    """The same bare client against nbagent's lean kernel and against stock ipykernel; then, on the
    lean kernel, messages serialized by orjson (jupyter_client's default where it is installed, as
    nbagent installs it) against the json module."""
    with tempfile.TemporaryDirectory() as spec_dir:
        lean = BareKernel(lean=True, spec_dir=Path(spec_dir))
        kernel = await _bare_pair(lean, BareKernel(), runs, "bare client: lean kernel", "stock ipykernel")
        fast = BareKernel(lean=True, spec_dir=Path(spec_dir), packer="orjson")
        slow = BareKernel(lean=True, spec_dir=Path(spec_dir), packer="json")
        packer = await _bare_pair(
            fast, slow, runs, "bare client, lean kernel: orjson messages", "json module"
        )
    return [kernel, packer]


async def bench_pool(size: int, cells: int) -> list[Row]:
    code = "sum(i * i for i in range(200_000))"

    async def run_all(pool: KernelPool, workers: int) -> float:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for index in range(cells):
            queue.put_nowait(index)

        async def worker() -> None:
            async with pool.lease() as kernel:
                while not queue.empty():
                    queue.get_nowait()
                    result = await kernel.execute(code)
                    assert result.ok, result

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(workers)))
        return cells / (time.perf_counter() - started)

    async with KernelPool(size) as pool:
        await run_all(pool, size)  # warm-up
        serial = await run_all(pool, 1)
        parallel = await run_all(pool, size)
    return [
        (
            f"pool of {size}: cells/s, {size} episodes at once",
            f"{parallel:.1f}/s",
            f"1 episode at a time {serial:.1f}/s",
            f"{parallel / serial:.2f}x",
        )
    ]


async def bench_isolation(starts: int, runs: int) -> list[Row]:
    """Start and trivial-cell cost of each isolation mode, next to a kernel without any."""
    if (reason := bwrap_unusable()) is not None:
        print(f"isolation rows skipped: {reason}")
        return []
    modes = {
        "private processes (default)": KernelConfig(),
        "sandbox": KernelConfig(sandbox=True),
    }
    plain = KernelConfig(private_processes=False)
    rows: list[Row] = []
    for name, config in modes.items():
        ours: list[float] = []
        bare: list[float] = []
        for _ in range(starts):
            for times, cfg in ((ours, config), (bare, plain)):
                kernel = Kernel(cfg)
                times.append(await _time(kernel.start))
                await kernel.shutdown()
        async with Kernel(config) as isolated, Kernel(plain) as unisolated:
            cell, floor = await _alternate(
                lambda: isolated.execute("1"), lambda: unisolated.execute("1"), runs
            )
        for what, a, b in (("start", ours, bare), ("trivial cell `1`", cell, floor)):
            rows.append(
                (
                    f"{name}: {what} (median)",
                    _ms(statistics.median(a)),
                    f"no isolation {_ms(statistics.median(b))}",
                    f"{statistics.median(a) / statistics.median(b):.2f}x",
                )
            )
    return rows


def _print(rows: list[Row]) -> None:
    headers = ("measure", "nbagent", "baseline (same run)", "ratio")
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(4)]
    line = " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    print(line)
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))


async def main(args: argparse.Namespace) -> None:
    rows = await bench_start(args.starts)
    rows += await bench_cells(args.runs)
    rows += await bench_lean_kernel(args.runs)
    rows += await bench_pool(args.pool_size, args.pool_cells)
    rows += await bench_isolation(args.starts, args.runs)
    print(f"python {sys.version.split()[0]}, {args.runs} runs per cell measure")
    _print(rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="timed runs per cell measure")
    parser.add_argument("--starts", type=int, default=5, help="kernel starts to time")
    parser.add_argument("--pool-size", type=int, default=4)
    parser.add_argument("--pool-cells", type=int, default=80, help="cells run by the pool measure")
    asyncio.run(main(parser.parse_args()))
