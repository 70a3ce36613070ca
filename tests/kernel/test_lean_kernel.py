"""The kernel nbagent runs (`nbagent.kernel.lean_kernel`), on real kernels launched and forked: no shell
channel thread (and no subshells in its kernel_info reply), no debug records, top-level await and
async comprehensions still run; and its memoized `_accepts_parameters`."""

from __future__ import annotations

import ast
from typing import Any

import pytest

from nbagent.kernel import KernelConfig, KernelPool, launch
from nbagent.kernel.lean_kernel import _memoized
from nbagent.trajectory import ExecuteResult

_INSIDE = (
    "import logging, threading\n"
    "_k = get_ipython().kernel\n"
    "(type(_k).__name__, type(_k.shell).__name__, sorted(t.name for t in threading.enumerate()),\n"
    " _k.log.getEffectiveLevel(), _k._supports_kernel_subshells)"
)


@pytest.mark.parametrize(
    ("start", "sandbox"),
    [
        ("launch", False),
        ("launch", True),
        pytest.param(
            "fork", True, marks=pytest.mark.skipif(launch.bwrap_unusable() is not None, reason="no bwrap")
        ),
    ],
)
async def test_kernels_run_the_lean_kernel_and_async_cells_still_work(start: str, sandbox: bool) -> None:
    async with KernelPool(1, KernelConfig(sandbox=sandbox), start=start) as pool:  # type: ignore[arg-type]
        kernel = pool.kernels[0]
        inside = await kernel.execute(_INSIDE)
        assert inside.ok, inside
        output = inside.outputs[-1]
        assert isinstance(output, ExecuteResult)
        name, shell, threads, level, subshells = ast.literal_eval(output.data["text/plain"])
        assert (name, shell) == ("LeanKernel", "LeanShell")
        assert "Shell channel" not in threads
        assert "MainThread" in threads
        assert level == 30  # WARNING, the application's level
        assert subshells is False
        reply = await kernel._process.client.kernel_info(reply=True, timeout=10)
        assert reply["content"]["status"] == "ok"
        assert "kernel subshells" not in reply["content"]["supported_features"]
        awaited = await kernel.execute("import asyncio\nawait asyncio.sleep(0.01)\n6 * 7")
        assert awaited.ok, awaited
        assert isinstance(awaited.outputs[-1], ExecuteResult)
        assert awaited.outputs[-1].data["text/plain"] == "42"
        comprehension = await kernel.execute("async def g():\n    yield 1\n[x async for x in g()]")
        assert comprehension.ok, comprehension
        assert isinstance(comprehension.outputs[-1], ExecuteResult)
        assert comprehension.outputs[-1].data["text/plain"] == "[1]"


def test_accepts_parameters_is_asked_once_per_function_and_answers_copies() -> None:
    calls: list[Any] = []

    def accepts(meth: Any, names: list[str]) -> dict[str, bool]:
        calls.append(meth)
        return dict.fromkeys(names, True)

    class Shell:
        def run_cell(self, cell_id: str = "") -> None: ...

    memoized = _memoized(accepts)
    first = memoized(Shell().run_cell, ["cell_id", "cell_meta"])
    first["cell_id"] = False
    again = memoized(Shell().run_cell, ["cell_id", "cell_meta"])  # another bound method, same function
    assert again == {"cell_id": True, "cell_meta": True}
    assert len(calls) == 1
    assert memoized(Shell().run_cell, ["cell_id"]) == {"cell_id": True}
    assert len(calls) == 2
