"""Toolset: building from tools and callables, lookup, composition."""

from __future__ import annotations

import pytest

from nbagent.errors import ToolDefinitionError, ToolError
from nbagent.tools import Tool, Toolset, tool


@tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


def multiply(a: int, b: int) -> int:
    """Multiply two numbers."""
    return a * b


def test_plain_callables_are_wrapped() -> None:
    tools = Toolset([add, multiply])
    assert tools.names == ["add", "multiply"]
    assert len(tools) == 2
    assert "multiply" in tools
    assert "divide" not in tools
    assert isinstance(tools.get("multiply"), Tool)
    assert tools.get("add") is add
    assert [item.name for item in tools] == ["add", "multiply"]


async def test_wrapped_callables_are_invocable() -> None:
    assert await Toolset([multiply]).get("multiply").invoke([6, 7]) == 42


def test_unknown_name_lists_the_available_tools() -> None:
    with pytest.raises(ToolError, match=r"no tool named 'divide'; available tools: add, multiply"):
        Toolset([add, multiply]).get("divide")
    with pytest.raises(ToolError, match="available tools: none"):
        Toolset().get("add")


def test_duplicate_names_are_refused() -> None:
    other_add = tool(name="add")(multiply)
    with pytest.raises(
        ToolDefinitionError, match=r"two tools are named 'add'.*rename one with @tool\(name=...\)"
    ):
        Toolset([add, other_add])


def test_merge_and_plus() -> None:
    first = Toolset([add])
    second = Toolset([multiply])
    assert Toolset.merge(first, second).names == ["add", "multiply"]
    assert (first + second).names == ["add", "multiply"]
    assert (first + [multiply]).names  # noqa: RUF005 - Toolset + list is what is tested == ["add", "multiply"]
    assert (first + first).names == ["add"]  # the same Tool twice is not a conflict
    with pytest.raises(ToolDefinitionError):
        first + [tool(name="add")(multiply)]  # noqa: RUF005


def test_render_stubs_joins_the_stubs_in_order() -> None:
    tools = Toolset([add, multiply])
    assert tools.render_stubs() == add.render_stub() + "\n\n" + tools.get("multiply").render_stub()
    assert Toolset().render_stubs() == ""


def test_two_types_with_one_name_are_refused() -> None:
    from pydantic import BaseModel

    def make(field: str) -> Tool:
        class Item(BaseModel):
            value: int

        Item.__qualname__ = f"Item_{field}"

        def handle(item: Item) -> int:
            return item.value

        handle.__name__ = f"handle_{field}"
        handle.__annotations__ = {"item": Item, "return": int}  # this module's annotations are strings
        return Tool(handle)

    first, second = make("a"), make("b")
    assert Toolset([first]).render_stubs().startswith("class Item(TypedDict):")
    with pytest.raises(ToolDefinitionError, match="two different types are named 'Item'"):
        Toolset([first, second])
