"""A typed tool called from code in a real Jupyter kernel, through `ToolBridge.run_cell`."""

from __future__ import annotations

import dataclasses

from pydantic import BaseModel

from nbagent.kernel import CellStatus, Kernel
from nbagent.tools import RunContext, ToolBridge, Toolset, tool


class Order(BaseModel):
    item: str
    quantity: int = 1


class Quote(BaseModel):
    item: str
    total: float


@dataclasses.dataclass
class Store:
    """Host-side state the tool reads through its run context; it never enters the kernel."""

    prices: dict[str, float]
    quoted: list[str] = dataclasses.field(default_factory=list)


@tool
def quote(ctx: RunContext[Store], order: Order, discount: float = 0.0) -> Quote:
    """Price an order.

    Args:
        order: What to buy.
        discount: Fraction taken off the total.
    """
    ctx.deps.quoted.append(f"{ctx.task_id}:{order.item}")
    return Quote(item=order.item, total=ctx.deps.prices[order.item] * order.quantity * (1 - discount))


CODE = """\
import inspect
q = quote({"item": "tea", "quantity": "4"}, discount=0.25)
print(type(q).__name__, q["item"], q["total"])
print(inspect.signature(quote))
try:
    quote({"item": "tea", "quantity": "lots"})
except TypeError as exc:
    print("TypeError:", exc)
try:
    quote({"item": "coffee"})
except ToolError as exc:
    print("ToolError:", exc)
"""


async def test_typed_tool_with_deps_called_from_kernel_code() -> None:
    store = Store(prices={"tea": 2.0})
    bridge = ToolBridge(Toolset([quote]), RunContext(deps=store, task_id="task-7"))
    async with Kernel() as kernel:
        result = await bridge.run_cell(kernel, CODE, timeout=60)

    assert result.status is CellStatus.OK, result.outputs
    stdout = "".join(output.text for output in result.outputs if output.output_type == "stream")
    lines = stdout.splitlines()
    assert lines[0] == "dict tea 6.0"
    assert lines[1] == "(order: Order, discount: float = 0.0) -> Quote"
    assert lines[2] == (
        "TypeError: quote() argument 'order' must be Order, got dict {'item': 'tea', 'quantity': 'lots'} "
        "(quantity: Input should be a valid integer, unable to parse string as an integer)"
    )
    assert lines[3] == "ToolError: tool 'quote' failed with KeyError: 'coffee'"
    assert store.quoted == ["task-7:tea", "task-7:coffee"]  # the bad-typed call never reached the function

    first, bad, failed = result.tool_calls
    # the kernel stub binds the call to the signature, so `discount=0.25` travels as a positional argument
    assert (first.name, first.args, first.kwargs) == ("quote", [{"item": "tea", "quantity": "4"}, 0.25], {})
    assert first.result == {"item": "tea", "total": 6.0}
    assert first.error is None
    assert bad.result is None
    assert bad.error is not None
    assert bad.error.startswith("ToolArgumentError: quote() argument 'order' must be Order")
    assert failed.error == "ToolExecutionError: tool 'quote' failed with KeyError: 'coffee'"
