"""Calling tools: argument binding and validation, sync/async execution, errors and result conversion."""

from __future__ import annotations

import dataclasses
import enum
import json
import threading
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from nbagent.errors import ToolArgumentError, ToolError, ToolExecutionError, ToolResultError
from nbagent.tools import RunContext, Tool, tool


class Level(enum.Enum):
    LOW = 1
    HIGH = 2


class Order(BaseModel):
    item: str
    quantity: int = 1


@dataclasses.dataclass
class Receipt:
    order: Order
    total: float
    codes: tuple[str, ...]
    level: Level


@dataclasses.dataclass
class Shop:
    prices: dict[str, float]
    log: list[str] = dataclasses.field(default_factory=list)


@tool
def place(ctx: RunContext[Shop], order: Order, level: Level = Level.LOW, *, note: str = "") -> Receipt:
    """Place an order."""
    assert isinstance(order, Order)
    assert isinstance(level, Level)
    ctx.deps.log.append(f"{ctx.task_id}:{order.item}:{note}")
    return Receipt(order, ctx.deps.prices[order.item] * order.quantity, ("a", "b"), level)


@tool
async def double(x: int) -> int:
    """Twice x."""
    await anyio.lowlevel.checkpoint()
    return 2 * x


@tool
def thread_name() -> str:
    """The thread the tool runs in."""
    return threading.current_thread().name


@tool(run_in_thread=False)
def thread_name_inline() -> str:
    """The thread the tool runs in, without a worker thread."""
    return threading.current_thread().name


@tool
def echo(value: Any) -> Any:
    """Return the value."""
    return value


def positional_only(a: int, /, b: int = 2) -> list[int]:
    return [a, b]


async def test_validates_injects_context_and_converts_the_result() -> None:
    shop = Shop(prices={"tea": 2.5})
    ctx = RunContext(deps=shop, task_id="t1")
    result = await place.invoke([{"item": "tea", "quantity": "3"}], {"level": 2, "note": "hi"}, ctx)
    assert result == {
        "order": {"item": "tea", "quantity": 3},
        "total": 7.5,
        "codes": ["a", "b"],
        "level": 2,
    }
    assert shop.log == ["t1:tea:hi"]
    json.dumps(result)


async def test_async_tool_is_awaited() -> None:
    assert await double.invoke([21], {}) == 42
    assert await double.invoke([], {"x": "4"}) == 8


async def test_sync_tools_run_in_a_worker_thread_unless_told_not_to() -> None:
    loop_thread = threading.current_thread().name
    assert await thread_name.invoke() != loop_thread
    assert await thread_name_inline.invoke() == loop_thread


async def test_positional_only_parameters() -> None:
    assert await Tool(positional_only).invoke([1], {"b": 5}) == [1, 5]
    with pytest.raises(ToolArgumentError, match="positional"):
        await Tool(positional_only).invoke([], {"a": 1})


async def test_callable_instances_and_bound_methods() -> None:
    class Counter:
        def __init__(self) -> None:
            self.count = 0

        async def __call__(self, step: int = 1) -> int:
            self.count += step
            return self.count

        def add(self, step: int) -> int:
            self.count += step
            return self.count

    counter = Counter()
    as_tool = Tool(counter, name="bump")
    assert as_tool.is_async
    assert await as_tool.invoke([], {"step": 2}) == 2
    assert await Tool(counter.add).invoke([3]) == 5


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ([], {}, "place() missing a required argument: 'order'"),
        ([{"item": "tea"}, 1, 2], {}, "place() too many positional arguments"),
        ([{"item": "tea"}], {"colour": "red"}, "place() got an unexpected keyword argument 'colour'"),
        ([{"item": "tea"}], {"order": {}}, "place() multiple values for argument 'order'"),
        (
            [{"item": "tea", "quantity": "many"}],
            {},
            "place() argument 'order' must be Order, got dict {'item': 'tea', 'quantity': 'many'} "
            "(quantity: Input should be a valid integer, unable to parse string as an integer)",
        ),
        (
            ["tea"],
            {"level": 3},
            "place() got 2 invalid arguments:\n"
            "- argument 'order' must be Order, got str 'tea' (Input should be a valid dictionary or "
            "instance of Order)\n"
            "- argument 'level' must be Literal[1, 2], got int 3 (Input should be 1 or 2)",
        ),
    ],
)
async def test_bad_arguments_raise_before_the_function_runs(
    args: list[Any], kwargs: dict[str, Any], message: str
) -> None:
    shop = Shop(prices={"tea": 1.0})
    with pytest.raises(ToolArgumentError) as info:
        await place.invoke(args, kwargs, RunContext(deps=shop))
    assert str(info.value) == message
    assert shop.log == []


async def test_long_argument_values_are_shortened_in_messages() -> None:
    with pytest.raises(ToolArgumentError) as info:
        await double.invoke(["x" * 500])
    assert "got str 'xxxx" in str(info.value)
    assert "...'" not in str(info.value)
    assert len(str(info.value)) < 300


async def test_missing_context_is_a_clear_error() -> None:
    with pytest.raises(ToolError, match=r"takes a RunContext but none was given; pass ctx=RunContext"):
        await place.invoke([{"item": "tea"}])


async def test_exceptions_in_the_function_become_execution_errors() -> None:
    @tool
    def divide(a: float, b: float) -> float:
        """a / b."""
        return a / b

    with pytest.raises(ToolExecutionError) as info:
        await divide.invoke([1, 0])
    error = info.value
    assert (error.tool, error.error_type, error.error_message) == (
        "divide",
        "ZeroDivisionError",
        "float division by zero",
    )
    assert str(error) == "tool 'divide' failed with ZeroDivisionError: float division by zero"
    assert isinstance(error.__cause__, ZeroDivisionError)


async def test_async_exceptions_and_tool_errors_raised_on_purpose() -> None:
    @tool
    async def fail(kind: str) -> None:
        """Fail."""
        if kind == "tool":
            raise ToolArgumentError("kind must be a known city")
        raise KeyError(kind)

    with pytest.raises(ToolExecutionError, match="failed with KeyError: 'other'"):
        await fail.invoke(["other"])
    with pytest.raises(ToolArgumentError, match="kind must be a known city"):
        await fail.invoke(["tool"])


class Opaque:
    pass


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({1, 2}, "result is a set, which is not JSON-serializable"),
        (b"raw", "result is a bytes, which is not JSON-serializable"),
        ({"rows": [1, Opaque()]}, "result['rows'][1] is a tests.tools.test_invoke.Opaque, which is not"),
        ({1: "a"}, "result has the key 1 of type int; JSON object keys must be strings"),
        ([{"when": Level}], "result[0]['when'] is a enum.EnumType"),
    ],
)
async def test_non_serializable_results_name_the_type_and_place(value: Any, message: str) -> None:
    with pytest.raises(ToolResultError) as info:
        await echo.invoke([value])
    assert str(info.value).startswith("tool 'echo' returned a value that cannot be sent as JSON: ")
    assert message in str(info.value)


async def test_circular_results_are_refused() -> None:
    loop: list[Any] = [1]
    loop.append(loop)
    with pytest.raises(ToolResultError, match=r"result\[1\] contains itself"):
        await echo.invoke([loop])


async def test_shared_but_not_circular_values_are_fine() -> None:
    shared = {"x": 1}
    assert await echo.invoke([[shared, shared]]) == [{"x": 1}, {"x": 1}]


async def test_calling_the_tool_object_calls_the_function() -> None:
    assert await double(5) == 10
    assert positional_only(1) == Tool(positional_only)(1)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=60)
@given(value=_json)
def test_any_json_value_round_trips(value: Any) -> None:
    result = anyio.run(echo.invoke, [value])
    assert result == value
    assert json.loads(json.dumps(result)) == value


def _with_tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_with_tuples(item) for item in value)
    if isinstance(value, dict):
        return {key: _with_tuples(item) for key, item in value.items()}
    return value


@settings(max_examples=40)
@given(value=_json)
def test_tuples_come_back_as_lists(value: Any) -> None:
    assert anyio.run(echo.invoke, [_with_tuples(value)]) == value


async def test_cancelling_a_call_does_not_wait_for_a_stuck_sync_function() -> None:
    started, release = threading.Event(), threading.Event()

    @tool
    def stuck() -> str:
        """Blocks until released."""
        started.set()
        release.wait()
        return "done"

    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as group:
            group.start_soon(stuck.invoke)
            await anyio.to_thread.run_sync(started.wait)
            scope.cancel()
    assert scope.cancelled_caught
    assert not release.is_set()
    release.set()


async def test_bound_to_calls_the_new_function_with_the_same_validation() -> None:
    seen: list[tuple[str, int]] = []

    def make(tag: str) -> Any:
        def record(item: str, quantity: int) -> str:
            """Record an order."""
            seen.append((tag, quantity))
            return tag

        return record

    first = Tool(make("a"))
    second = first.bound_to(make("b"))
    assert second.parameters_schema == first.parameters_schema
    assert await second.invoke([], {"item": "x", "quantity": "3"}) == "b"
    assert await first.invoke(["x", 1], {}) == "a"
    with pytest.raises(ToolArgumentError):
        await second.invoke([], {"item": "x", "quantity": "many"})
    assert seen == [("b", 3), ("a", 1)]
