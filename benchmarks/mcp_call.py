"""The cost of calling an MCP tool from kernel code, next to the same server called directly.

One `mcp-server-time` process per path, both started before timing. The baseline is the `mcp` SDK's own
client calling ``get_current_time`` in a loop in this process. The kernel path is what an agent's code
does: a real Jupyter kernel runs ``get_current_time(...)`` in a loop, each call crossing the tool bridge
to the host, which holds the MCP session (`nbagent.tools.MCPServer`). The table shows the median time of
one call over `--repeats` batches of `--calls` calls (the two paths' batches alternate), and the ratio
kernel / direct (goal: under 2x).

    .venv/bin/python benchmarks/mcp_call.py [--calls 50] [--repeats 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from rich.console import Console
from rich.table import Table

from nbagent.kernel import Kernel
from nbagent.tools import MCPServer, ToolBridge

SERVER = str(Path(sys.executable).parent / "mcp-server-time")
ARGS = ["--local-timezone", "Etc/UTC"]


async def measure(calls: int, repeats: int) -> tuple[list[float], list[float]]:
    """Seconds per call, one figure per batch, for each path; batches alternate between the two paths so
    that both see the same machine."""
    params = StdioServerParameters(command=SERVER, args=ARGS)
    direct, kernel_path = [], []
    cell = (
        "import time as _t\n_t0 = _t.perf_counter()\n"
        f"for _ in range({calls}):\n    get_current_time('Etc/UTC')\n"
        f"print((_t.perf_counter() - _t0) / {calls})"
    )
    with MCPServer.stdio(SERVER, ARGS) as server:
        bridge = ToolBridge(server.tools)
        async with Client(stdio_client(params)) as client, Kernel() as kernel:
            await client.call_tool("get_current_time", {"timezone": "Etc/UTC"})  # warm
            await bridge.run_cell(kernel, "get_current_time('Etc/UTC')", timeout=60)  # warm: stubs installed
            for _ in range(repeats):
                t0 = time.perf_counter()
                for _ in range(calls):
                    await client.call_tool("get_current_time", {"timezone": "Etc/UTC"})
                direct.append((time.perf_counter() - t0) / calls)
                result = await bridge.run_cell(kernel, cell, timeout=120)
                if not result.ok:
                    raise RuntimeError(f"the benchmark cell failed: {result.outputs}")
                kernel_path.append(float("".join(getattr(o, "text", "") for o in result.outputs).strip()))
    return direct, kernel_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    direct, kernel_path = asyncio.run(measure(args.calls, args.repeats))
    base, kernel = statistics.median(direct), statistics.median(kernel_path)
    table = Table(title=f"one MCP tool call (mcp-server-time, median of {args.repeats} x {args.calls} calls)")
    for column in ("path", "ms per call", "ratio to direct"):
        table.add_column(column, justify="right" if column != "path" else "left")
    table.add_row("mcp SDK client, direct", f"{base * 1e3:.2f}", "1.00")
    table.add_row("kernel code -> bridge -> host session", f"{kernel * 1e3:.2f}", f"{kernel / base:.2f}")
    Console().print(table)


if __name__ == "__main__":
    main()
