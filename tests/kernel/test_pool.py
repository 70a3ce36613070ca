"""KernelPool on real kernels: concurrent episodes, a kernel killed mid-cell, resets, cancellation, and
no orphan kernels when the host is interrupted or killed."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Literal

import psutil
import pytest
from pydantic import ValidationError

from nbagent.errors import KernelError
from nbagent.kernel import KernelConfig, KernelPool, launch
from nbagent.trajectory import CellResult, CellStatus, ErrorOutput, ExecuteResult, StreamOutput
from tests.fixtures.kernels import wait_for_file

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
async def test_sixteen_episodes_on_four_kernels_survive_one_killed_from_outside() -> None:
    victim = 5

    async def episode(pool: KernelPool, index: int) -> tuple[CellResult, CellResult]:
        async with pool.lease() as kernel:
            await kernel.execute(f"episode = {index}")
            if index == victim:
                code = "open('started', 'w').close()\nimport time\ntime.sleep(60)\nepisode"
                cell = asyncio.create_task(kernel.execute(code, timeout=120))
                await wait_for_file(kernel.workspace / "started")
                assert kernel.pid is not None
                os.kill(kernel.pid, signal.SIGKILL)
                middle = await cell
            else:
                middle = await kernel.execute("import time\ntime.sleep(0.2)\nepisode", timeout=120)
            last = await kernel.execute("episode", timeout=120)
            return middle, last

    async with KernelPool(4) as pool:
        results = await asyncio.gather(*(episode(pool, index) for index in range(16)))
    for index, (middle, last) in enumerate(results):
        if index == victim:
            assert middle.status is CellStatus.CRASHED
            assert middle.note is not None
            assert "SIGKILL" in middle.note
            assert isinstance(last.outputs[0], ErrorOutput)
            assert last.outputs[0].ename == "NameError"
        else:
            assert middle.status is CellStatus.OK, middle.note
            assert isinstance(last.outputs[0], ExecuteResult)
            assert last.outputs[0].data == {"text/plain": str(index)}


@pytest.mark.parametrize(("reset", "internal"), [("namespace", False), ("lazy", False), ("lazy", True)])
async def test_returned_kernel_is_reset_for_the_next_lease(
    tmp_path: Path, reset: Literal["namespace", "lazy"], internal: bool
) -> None:
    """A lazy reset runs with the next internal cell (same message) or before the next user cell."""
    code = "import os\nprint('secret' in globals(), os.getcwd())"
    async with KernelPool(1, KernelConfig(workspace=tmp_path), reset=reset) as pool:
        async with pool.lease() as kernel:
            assert kernel.workspace == tmp_path / "kernel-0"
            first = await kernel.execute("import os\nsecret = 42\nos.makedirs('sub')\nos.chdir('sub')")
            generation = kernel.generation
        async with pool.lease() as again:
            assert again is kernel
            assert again.generation == generation + 1
            result = await again.execute(code, store_history=not internal)
            count = await again.execute("1")
    assert result.outputs == [StreamOutput(name="stdout", text=f"False {tmp_path / 'kernel-0'}\n")]
    assert result.code == code
    assert first.execution_count is not None
    assert count.execution_count == first.execution_count + (1 if internal else 2)


async def test_own_temporary_workspace_is_emptied_between_leases() -> None:
    async with KernelPool(1) as pool:
        async with pool.lease() as kernel:
            await kernel.execute("open('left-behind.txt', 'w').write('x')")
        async with pool.lease() as kernel:
            assert not list(kernel.workspace.iterdir())


async def test_restart_mode_gives_a_fresh_process() -> None:
    async with KernelPool(1, reset="restart") as pool:
        async with pool.lease() as kernel:
            first_pid = kernel.pid
        async with pool.lease() as kernel:
            assert kernel.pid != first_pid
            assert (await kernel.execute("1")).execution_count == 1


async def test_cancelled_episode_returns_a_working_kernel() -> None:
    async with KernelPool(1) as pool:

        async def stuck() -> None:
            async with pool.lease() as kernel:
                await kernel.execute("open('started', 'w').close()\nimport time\ntime.sleep(60)", timeout=120)

        task = asyncio.create_task(stuck())
        kernel = pool.kernels[0]
        await wait_for_file(kernel.workspace / "started")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with pool.lease() as again:
            result = await again.execute("'fine'", timeout=60)
        assert result.outputs == [ExecuteResult(data={"text/plain": "'fine'"}, execution_count=1)]


async def test_closing_the_pool_stops_every_kernel() -> None:
    pool = KernelPool(2)
    await pool.start()
    pids = [kernel.pid for kernel in pool.kernels]
    async with pool.lease() as kernel:
        await kernel.execute("1")
    await pool.aclose()
    for pid in pids:
        assert pid is not None
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    with pytest.raises(KernelError, match="not running"):
        async with pool.lease():
            pass


def test_bad_pool_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one kernel"):
        KernelPool(0)
    with pytest.raises(ValueError, match="reset"):
        KernelPool(1, reset="wipe")  # type: ignore[arg-type]


_FORKING = pytest.mark.skipif(launch.bwrap_unusable() is not None, reason=str(launch.bwrap_unusable()))
_SEEN = (
    "import sys\n[name in sys.modules for name in ('yaml', 'xml.dom.minidom', 'xml.sax')], 'yaml' in dir()"
)


@pytest.mark.parametrize("start", ["launch", pytest.param("fork", marks=_FORKING)])
async def test_preloaded_modules_are_imported_before_the_first_cell(start: Literal["launch", "fork"]) -> None:
    config = KernelConfig(preload=("yaml", "xml.dom.minidom"))
    async with KernelPool(1, config, reset="restart", start=start) as pool:
        for _ in range(2):  # a new process each lease
            async with pool.lease() as kernel:
                seen = await kernel.execute(_SEEN)
                assert isinstance(seen.outputs[0], ExecuteResult), seen
                assert seen.outputs[0].data == {"text/plain": "([True, True, False], False)"}
    with pytest.raises(KernelError, match=r"(?s)KernelConfig\.preload.*No module named 'xml\.nosuch'"):
        async with KernelPool(1, KernelConfig(preload=("json", "xml.nosuch")), start=start):
            pass


def test_preload_takes_module_names_only() -> None:
    assert KernelConfig(preload=["xml.dom"]).preload == ("xml.dom",)
    for bad in ("", "xml..dom", "numpy; import os", "class"):
        with pytest.raises(ValidationError, match="is not a module name"):
            KernelConfig(preload=(bad,))


_HOST = """
import asyncio, json, sys
from nbagent.kernel import KernelPool

async def main():
    async with KernelPool(2, start=sys.argv[1]) as pool:
        async with pool.lease() as kernel:
            print(json.dumps([k.pid for k in pool.kernels]), flush=True)
            await kernel.execute("print('busy')\\nimport time\\ntime.sleep(120)", timeout=300)

asyncio.run(main())
"""


def _kernel_processes_after(host_signal: signal.Signals, start: str) -> list[psutil.Process]:
    """Run a host holding a pool, send it `host_signal` mid-cell, return its kernel processes left alive."""
    host = subprocess.Popen(
        [sys.executable, "-c", _HOST, start],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert host.stdout is not None
        line = host.stdout.readline()
        assert line, host.stderr.read() if host.stderr else "host printed nothing"
        pids = json.loads(line)
        assert len(pids) == 2
        descendants = psutil.Process(host.pid).children(recursive=True)
        if start == "launch":
            assert {p.pid for p in descendants} >= set(pids)
        else:  # forked kernels' PIDs are their template's; count the processes running ipykernel
            kernels = [p for p in descendants if p.cmdline()[:2] == [sys.executable, "-P"]]
            assert len(kernels) == 3  # the template and its two forks
        host.send_signal(host_signal)
        host.wait(timeout=60)
    finally:
        if host.poll() is None:
            host.kill()
    _, alive = psutil.wait_procs(descendants, timeout=10)
    return [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]


@pytest.mark.slow
@pytest.mark.parametrize("start", ["launch", "fork"])
def test_ctrl_c_leaves_no_orphan_kernels(start: str) -> None:
    assert _kernel_processes_after(signal.SIGINT, start) == []


@pytest.mark.slow
@pytest.mark.parametrize("start", ["launch", "fork"])
def test_killed_host_leaves_no_orphan_kernels(start: str) -> None:
    assert _kernel_processes_after(signal.SIGKILL, start) == []
