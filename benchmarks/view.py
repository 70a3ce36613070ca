"""Time to first render of `nbagent view` on a 10,000-episode file, next to reading the file.

Writes `--episodes` three-step episodes (token ids and logprobs on every call) to a temporary file, then
times, in this one run: a plain read of its bytes, `read_trajectories` over it (what `nbagent show` does
before it prints), indexing it (`Collection.open`, the server's start), and headless Chromium loading the
page until the table is drawn (its start-up, measured on a one-episode file, is subtracted). The ratio
column is each time over `read_trajectories`'.

    .venv/bin/python benchmarks/view.py [--episodes 10000]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from nbagent.trajectory import (
    Action,
    ModelCall,
    ModelInfo,
    Reward,
    Step,
    TaskSpec,
    Termination,
    Trajectory,
    read_trajectories,
)
from nbagent.view.data import Collection
from nbagent.view.server import ViewServer


def episode(k: int) -> Trajectory:
    ids = list(range(100, 200))
    call = ModelCall(
        messages=[{"role": "user", "content": f"What is {k} + 1?"}],
        completion="<code>print(1)</code>" * 10,
        completion_token_ids=ids,
        completion_logprobs=[-0.1] * len(ids),
    )
    steps = [Step(index=i, model_call=call, action=Action(kind="code", code="print(1)")) for i in range(3)]
    return Trajectory(
        task=TaskSpec(id=f"task-{k % 500}", prompt=f"What is {k} + 1?"),
        model=ModelInfo(provider="bench", model="m", policy_version=k // 1000),
        steps=steps,
        termination=Termination.SUBMITTED,
        reward=Reward(total=float(k % 2)),
        group_id=f"g{k // 8}",
        sample_index=k % 8,
    )


def timed(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def page_load(path: Path, chromium: str) -> tuple[float, float]:
    """Seconds to index `path`, and Chromium's seconds until the page has drawn its table."""
    start = time.perf_counter()
    server = ViewServer(Collection.open(path))
    indexed = time.perf_counter() - start
    threading.Thread(target=server.serve_forever, daemon=True).start()
    flags = ["--headless=new", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=30000", "--dump-dom"]
    start = time.perf_counter()
    dom = subprocess.run([chromium, *flags, server.url], capture_output=True, text=True, check=True).stdout
    loaded = time.perf_counter() - start
    server.shutdown()
    server.server_close()
    if 'data-ready="1"' not in dom or 'data-index="99"' not in dom:
        raise SystemExit("the page did not draw its first page of the table")
    return indexed, loaded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=10_000)
    args = parser.parse_args()
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("chromium is not installed (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as tmp:
        big, small = Path(tmp) / "big.jsonl", Path(tmp) / "small.jsonl"
        big.write_text("".join(episode(k).to_json_line() for k in range(args.episodes)))
        small.write_text("".join(episode(k).to_json_line() for k in range(100)))
        read_s = timed(big.read_bytes)
        validate_s = timed(lambda: sum(1 for _ in read_trajectories(big)))
        _, startup_s = page_load(small, chromium)
        index_s, load_s = page_load(big, chromium)
        size_mb = big.stat().st_size / 1e6
    first_render = index_s + max(0.0, load_s - startup_s)
    table = Table(title=f"nbagent view: {args.episodes} episodes, {size_mb:.0f} MB")
    for column in ("what", "seconds", "ratio to read_trajectories"):
        table.add_column(column, justify="right" if column != "what" else "left")
    rows = [
        ("read the bytes", read_s),
        ("read_trajectories (nbagent show's read)", validate_s),
        ("index (Collection.open)", index_s),
        ("chromium: page drawn (start-up subtracted)", load_s - startup_s),
        ("time to first render (index + page)", first_render),
        ("chromium start-up (100-episode file)", startup_s),
    ]
    for name, seconds in rows:
        table.add_row(name, f"{seconds:.2f}", f"{seconds / validate_s:.2f}")
    Console().print(table)


if __name__ == "__main__":
    main()
