"""Memory and CPU-time limits on real kernels."""

from __future__ import annotations

import pytest

from nbagent.kernel import Kernel, KernelConfig
from nbagent.trajectory import CellStatus, ErrorOutput, ExecuteResult


async def test_limits_are_set_in_the_kernel_process() -> None:
    async with Kernel(KernelConfig(memory_limit_mb=1024, cpu_time_limit_s=300)) as kernel:
        result = await kernel.execute(
            "import resource\n"
            "resource.getrlimit(resource.RLIMIT_DATA), resource.getrlimit(resource.RLIMIT_CPU)"
        )
    expected = repr(((1024 * 2**20, 1024 * 2**20), (300, 300)))
    assert result.outputs == [ExecuteResult(data={"text/plain": expected}, execution_count=1)]


async def test_allocating_past_the_memory_limit_fails_the_cell_not_the_kernel() -> None:
    async with Kernel(KernelConfig(memory_limit_mb=1024)) as kernel:
        assert (await kernel.execute("import numpy as np\nsmall = np.ones(10**6)\nsmall.sum()")).ok
        for code in ("big = np.ones(4 * 10**9 // 8)", "blob = bytearray(4 * 2**30)"):
            result = await kernel.execute(code, timeout=60)
            assert result.status is CellStatus.ERROR
            error = result.outputs[-1]
            assert isinstance(error, ErrorOutput)
            assert error.ename == "MemoryError"
        survived = await kernel.execute("int(small.sum())")
        assert survived.outputs == [ExecuteResult(data={"text/plain": "1000000"}, execution_count=4)]


@pytest.mark.slow
async def test_using_up_the_cpu_time_limit_kills_the_kernel_with_a_note() -> None:
    async with Kernel(KernelConfig(cpu_time_limit_s=3)) as kernel:
        result = await kernel.execute("while True:\n    pass", timeout=120)
        assert result.status is CellStatus.CRASHED
        assert result.note is not None
        assert "CPU-time limit of 3 s" in result.note
        assert (await kernel.execute("'fresh budget'")).ok
