"""ToolBridge on real kernels: host tools called from kernel code, their errors, and their records."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from nbagent.kernel import Kernel, KernelPool, render_cell
from nbagent.tools import RunContext, tool
from nbagent.tools.bridge import ToolBridge
from nbagent.trajectory import CellResult, CellStatus, ErrorOutput, ExecuteResult, StreamOutput

calls_made: list[str] = []


@tool
def add(a: int, b: int = 2) -> int:
    """Add two integers.

    Args:
        a: The first number.
        b: The second number.
    """
    calls_made.append("add")
    return a + b


@tool
def explode(reason: str) -> str:
    """Always fails."""
    raise ValueError(f"cannot do it: {reason}")


@tool
def opaque() -> Any:
    """Returns something JSON cannot carry."""
    return threading.Lock()


@tool
def lookup(ctx: RunContext[dict[str, str]], key: str) -> str:
    """Look a key up in the application's data."""
    return ctx.deps[key]


def _value(result: CellResult) -> str:
    assert result.status is CellStatus.OK, render_cell(result)
    out = result.outputs[-1]
    assert isinstance(out, ExecuteResult)
    return str(out.data["text/plain"])


def _error(result: CellResult) -> ErrorOutput:
    assert result.status is CellStatus.ERROR, render_cell(result)
    out = result.outputs[-1]
    assert isinstance(out, ErrorOutput)
    return out


@pytest.fixture
def bridge() -> ToolBridge:
    calls_made.clear()
    return ToolBridge([add, explode, opaque, lookup], ctx=RunContext(deps={"capital": "Paris"}))


async def test_tool_call_returns_the_value_and_is_recorded(kernel: Kernel, bridge: ToolBridge) -> None:
    result = await bridge.run_cell(kernel, "total = add(2, b=3) + add(a=10)\ntotal")
    assert _value(result) == "17"
    assert [(c.name, c.args, c.kwargs, c.result, c.error) for c in result.tool_calls] == [
        ("add", [2, 3], {}, 5, None),
        ("add", [10], {}, 12, None),  # bound as Python binds: a keyword that fits a position moves there
    ]
    assert all(c.latency_s > 0 for c in result.tool_calls)


async def test_stub_has_the_tools_signature_and_docstring(kernel: Kernel, bridge: ToolBridge) -> None:
    result = await bridge.run_cell(
        kernel, "import inspect\nprint(inspect.signature(add))\nprint(add.__doc__)"
    )
    (out,) = result.outputs
    assert isinstance(out, StreamOutput)
    assert out.text == f"(a: int, b: int = 2) -> int\n{add.docstring}\n"


async def test_a_tool_that_raises_raises_tool_error_in_the_kernel(kernel: Kernel, bridge: ToolBridge) -> None:
    result = await bridge.run_cell(kernel, "explode('no fuel')")
    error = _error(result)
    assert error.ename == "ToolError"
    assert error.evalue == "tool 'explode' failed with ValueError: cannot do it: no fuel"
    (call,) = result.tool_calls
    assert call.error is not None
    assert "ValueError: cannot do it: no fuel" in call.error
    caught = await bridge.run_cell(
        kernel, "try:\n    explode('x')\nexcept ToolError as e:\n    print('handled:', e)"
    )
    assert caught.outputs == [
        StreamOutput(name="stdout", text="handled: tool 'explode' failed with ValueError: cannot do it: x\n")
    ]


async def test_wrong_argument_types_raise_type_error_before_the_tool_runs(
    kernel: Kernel, bridge: ToolBridge
) -> None:
    result = await bridge.run_cell(kernel, "add('seven')")
    error = _error(result)
    assert error.ename == "TypeError"
    assert error.evalue.startswith("add() argument 'a' must be int, got str 'seven'")
    assert calls_made == []
    (call,) = result.tool_calls
    assert call.error is not None
    assert call.error.startswith("ToolArgumentError")
    arity = _error(await bridge.run_cell(kernel, "add(1, 2, 3)"))
    assert (arity.ename, arity.evalue) == ("TypeError", "add() too many positional arguments")
    not_json = _error(await bridge.run_cell(kernel, "add(object())"))
    assert not_json.ename == "TypeError"
    assert "cannot be sent to the host as JSON" in not_json.evalue
    assert calls_made == []


async def test_numpy_values_are_sent_as_plain_numbers(kernel: Kernel, bridge: ToolBridge) -> None:
    result = await bridge.run_cell(kernel, "import numpy as np\nadd(np.int64(40), b=np.array(2))")
    assert _value(result) == "42"


async def test_a_non_serializable_return_raises_tool_error(kernel: Kernel, bridge: ToolBridge) -> None:
    error = _error(await bridge.run_cell(kernel, "opaque()"))
    assert error.ename == "ToolError"
    assert "cannot be sent as JSON" in error.evalue
    assert "_thread.lock" in error.evalue


async def test_tools_get_the_run_context(kernel: Kernel, bridge: ToolBridge) -> None:
    assert _value(await bridge.run_cell(kernel, "lookup('capital')")) == "'Paris'"


async def test_input_in_user_code_still_fails_clearly_with_the_bridge(
    kernel: Kernel, bridge: ToolBridge
) -> None:
    result = await bridge.run_cell(kernel, "name = input('who? ')", timeout=30)
    error = _error(result)
    assert error.ename == "InputNotAvailableError"
    assert result.tool_calls == []


async def test_async_tools_run_on_the_host_loop_while_kernels_wait() -> None:
    arrived = 0
    both_here = asyncio.Event()
    loops: list[asyncio.AbstractEventLoop] = []

    @tool
    async def rendezvous(name: str) -> str:
        """Returns once two callers have arrived."""
        nonlocal arrived
        loops.append(asyncio.get_running_loop())
        arrived += 1
        if arrived == 2:
            both_here.set()
        await both_here.wait()
        return f"hello {name}"

    bridge = ToolBridge([rendezvous])
    async with KernelPool(2) as pool, pool.lease() as first, pool.lease() as second:
        results = await asyncio.gather(
            bridge.run_cell(first, "rendezvous('one')", timeout=60),
            bridge.run_cell(second, "rendezvous('two')", timeout=60),
        )
    assert [_value(r) for r in results] == ["'hello one'", "'hello two'"]
    assert loops == [asyncio.get_running_loop()] * 2


async def test_a_cell_timing_out_inside_a_tool_call_is_recorded(kernel: Kernel) -> None:
    never = asyncio.Event()

    @tool
    async def wait_forever() -> str:
        """Never returns."""
        await never.wait()
        return "unreachable"

    bridge = ToolBridge([wait_forever])
    await bridge.run_cell(kernel, "kept = 7")
    result = await bridge.run_cell(kernel, "wait_forever()", timeout=1)
    assert result.status is CellStatus.TIMEOUT
    (call,) = result.tool_calls
    assert call.error is not None
    assert call.error.startswith("cancelled")
    # The interrupt ended the kernel's wait for the reply: no restart, the variables are still there.
    assert not result.state_lost
    after = await bridge.run_cell(kernel, "kept")
    assert [o.data["text/plain"] for o in after.outputs if isinstance(o, ExecuteResult)] == ["7"]


async def test_stubs_come_back_after_a_crash_and_a_pool_reset(bridge: ToolBridge) -> None:
    async with KernelPool(1) as pool:
        async with pool.lease() as kernel:
            assert _value(await bridge.run_cell(kernel, "add(1)")) == "3"
            crashed = await bridge.run_cell(kernel, "import os\nos._exit(1)")
            assert crashed.status is CellStatus.CRASHED
            assert _value(await bridge.run_cell(kernel, "add(2)")) == "4"
        async with pool.lease() as kernel:
            assert _value(await bridge.run_cell(kernel, "add(3)")) == "5"


async def test_a_stub_run_without_the_bridge_says_so(kernel: Kernel, bridge: ToolBridge) -> None:
    await bridge.install(kernel)
    error = _error(await kernel.execute("add(1)"))
    assert error.ename == "ToolError"
    assert "without a tool bridge" in error.evalue


async def test_setup_code_and_input_handler_drive_execute_directly(
    kernel: Kernel, bridge: ToolBridge
) -> None:
    assert (await kernel.execute(bridge.setup_code(), store_history=False)).ok
    result = await kernel.execute("add(20, 22)", input_handler=bridge.input_handler)
    assert _value(result) == "42"
    assert [(c.name, c.result) for c in bridge.calls] == [("add", 42)]
