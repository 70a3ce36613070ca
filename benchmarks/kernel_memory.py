"""Where a kernel's memory and start-up CPU go, forked against launched kernels in the same run.

Starts a pool of N kernels per start mode (sandboxed unless ``--no-sandbox``), runs E rounds of one
trivial cell per kernel, then reports per kernel: threads; CPU from start to idle and per episode;
RSS, PSS and USS (private pages); for forks, how much of their writable memory is pages copied from
the template (a page frame other than the template's at the same address) and how much is new
(``/proc/<pid>/pagemap``: frame numbers need root, otherwise "n/a"); the Linux kernel's own memory
per kernel from ``/proc/meminfo`` (page tables, kernel stacks, slab: namespaces, sockets, tasks); the
host's own memory per kernel client; and the machine's used memory per kernel. The last row is the
ratio of the first mode to the second.

    .venv/bin/python benchmarks/kernel_memory.py --kernels 64 --episodes 2
"""

from __future__ import annotations

import argparse
import asyncio
import os
import struct
import sys
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collect import settled_used_memory_mib, used_memory_mib

from nbagent.kernel import KernelConfig, KernelPool

_PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
_MEMINFO = ("PageTables", "KernelStack", "Slab")
_SAMPLE = 8
"""Forks whose pages are compared with the template's (each comparison reads both page maps)."""


def meminfo() -> dict[str, int]:
    with open("/proc/meminfo") as f:
        return {line.split(":")[0]: int(line.split()[1]) for line in f}


def rollup(pid: int) -> dict[str, int]:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        return {line.split(":")[0]: int(line.split()[1]) for line in f if line.endswith("kB\n")}


def frames(pid: int, start: int, end: int) -> list[int | None]:
    """The page frame of each page of [start, end) in process `pid` (None: not in memory)."""
    with open(f"/proc/{pid}/pagemap", "rb") as f:
        f.seek(start // (_PAGE_KIB * 1024) * 8)
        data = f.read((end - start) // (_PAGE_KIB * 1024) * 8)
    return [entry & ((1 << 55) - 1) if entry >> 63 else None for (entry,) in struct.iter_unpack("Q", data)]


def copied_and_new(kernel: int, template: int) -> tuple[int, int]:
    """KiB of the kernel's writable pages that differ from the template's, and that it alone has."""
    copied = new = 0
    with open(f"/proc/{kernel}/maps") as f:
        for line in f:
            fields = line.split()
            if "w" not in fields[1]:
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            own = frames(kernel, start, end)
            try:
                theirs: list[int | None] = frames(template, start, end)
            except OSError:
                theirs = [None] * len(own)
            for mine, its in zip(own, theirs, strict=False):
                if mine is None or mine == its:
                    continue
                if its is None:
                    new += _PAGE_KIB
                else:
                    copied += _PAGE_KIB
    return copied, new


def kernel_processes() -> list[psutil.Process]:
    """This process's kernels: descendants running threads (bubblewrap and a template run one)."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.num_threads() > 2:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def cpu_ms(procs: list[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total * 1000


async def measure(start: str, kernels: int, episodes: int, sandbox: bool) -> dict[str, Any]:
    baseline_used = settled_used_memory_mib()
    before, host_before = meminfo(), rollup(os.getpid())["Anonymous"]
    async with KernelPool(kernels, KernelConfig(sandbox=sandbox), start=start) as pool:  # type: ignore[arg-type]
        await asyncio.sleep(1)
        procs = kernel_processes()
        started = cpu_ms(procs)

        async def episode() -> None:
            async with pool.lease() as kernel:
                result = await kernel.execute("x = 6 * 7\nprint(x)")
                assert result.ok, result

        for _ in range(episodes):
            await asyncio.gather(*(episode() for _ in range(kernels)))
        await asyncio.sleep(0.5)
        after, host_after = meminfo(), rollup(os.getpid())["Anonymous"]
        used = used_memory_mib() - baseline_used
        ran = cpu_ms(procs) - started
        rollups = [rollup(proc.pid) for proc in procs]
        threads = sorted({proc.num_threads() for proc in procs})
        pages: tuple[float, float] | None = None
        if start == "fork" and os.geteuid() == 0:
            sample = [copied_and_new(proc.pid, proc.ppid()) for proc in procs[:_SAMPLE]]
            pages = (
                sum(c for c, _ in sample) / len(sample) / 1024,
                sum(n for _, n in sample) / len(sample) / 1024,
            )
    n = len(procs)
    assert n == kernels, f"found {n} kernel processes for {kernels} kernels"
    return {
        "start": start,
        "kernels": n,
        "threads": "/".join(map(str, threads)),
        "start CPU ms": started / n,
        "CPU ms/episode": ran / (n * episodes),
        "RSS MiB": sum(r["Rss"] for r in rollups) / n / 1024,
        "PSS MiB": sum(r["Pss"] for r in rollups) / n / 1024,
        "USS MiB": sum(r["Private_Clean"] + r["Private_Dirty"] for r in rollups) / n / 1024,
        "copied MiB": pages[0] if pages else None,
        "new MiB": pages[1] if pages else None,
        **{f"{name} KiB": (after[name] - before[name]) / n for name in _MEMINFO},
        "host KiB": (host_after - host_before) / n,
        "machine MiB": used / n,
    }


def cell(value: Any) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kernels", type=int, default=64, help="kernels per start mode")
    parser.add_argument("--episodes", type=int, default=2, help="trivial episodes per kernel")
    parser.add_argument(
        "--start", default="fork,launch", help="start modes, in order (ratio: first / second)"
    )
    parser.add_argument("--no-sandbox", action="store_true", help="kernels outside the bubblewrap sandbox")
    args = parser.parse_args()
    rows = [
        asyncio.run(measure(start, args.kernels, args.episodes, not args.no_sandbox))
        for start in args.start.split(",")
    ]
    columns = list(rows[0])
    print(
        f"kernel memory: {args.kernels} kernels per mode, {args.episodes} trivial episodes each, "
        f"sandbox {'off' if args.no_sandbox else 'on'}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(cell(row[c]) for c in columns) + " |")
    if len(rows) == 2:
        ratios = ["ratio", "", ""] + [
            f"{rows[0][c] / rows[1][c]:.2f}x" if rows[0][c] is not None and rows[1][c] else "n/a"
            for c in columns[3:]
        ]
        print("| " + " | ".join(ratios) + " |")


if __name__ == "__main__":
    main()
