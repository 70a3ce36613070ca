"""`Toolset`: the tools of one agent or environment, by name."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from nbagent.errors import ToolDefinitionError, ToolError
from nbagent.tools.render import render_type
from nbagent.tools.tool import Tool

ToolLike = Tool | Callable[..., Any]


class Toolset:
    """An ordered collection of tools with unique names.

    Plain callables are made into tools as `@tool` would. Toolsets compose: ``Toolset.merge(a, b)`` or
    ``a + b`` (a name defined twice is an error, the same `Tool` object twice is not).
    """

    def __init__(self, tools: Iterable[ToolLike] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for item in tools:
            built = item if isinstance(item, Tool) else Tool(item)
            existing = self._tools.get(built.name)
            if existing is not None and existing is not built:
                raise ToolDefinitionError(
                    f"two tools are named {built.name!r} ({existing!r} and {built!r}); rename one with "
                    "@tool(name=...)"
                )
            self._tools[built.name] = built
        self._types = self._collect_types()

    def _collect_types(self) -> list[type]:
        """The structured types all tools use, each once; two different types may not share a name."""
        types: dict[str, type] = {}
        for item in self:
            for cls in item.structured_types:
                seen = types.setdefault(cls.__name__, cls)
                if seen is not cls:
                    both = f"{_dotted(seen)} and {_dotted(cls)}"
                    raise ToolDefinitionError(
                        f"two different types are named {cls.__name__!r} ({both}); the prompt would show "
                        "both under one name: rename one"
                    )
        return list(types.values())

    @classmethod
    def merge(cls, *toolsets: Iterable[ToolLike]) -> Toolset:
        """One toolset with the tools of all, in order."""
        return cls(itertools.chain.from_iterable(toolsets))

    def __add__(self, other: Iterable[ToolLike]) -> Toolset:
        return Toolset.merge(self, other)

    def get(self, name: str) -> Tool:
        """The tool called `name`; `ToolError` naming the available tools if there is none."""
        try:
            return self._tools[name]
        except KeyError:
            available = ", ".join(self._tools) or "none"
            raise ToolError(f"no tool named {name!r}; available tools: {available}") from None

    @property
    def names(self) -> list[str]:
        return list(self._tools)

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def render_stubs(self) -> str:
        """The stubs of all tools for the prompt, each structured type they use rendered once, first."""
        blocks = [render_type(cls) for cls in self._types]
        blocks.extend(item.render_stub(include_types=False) for item in self)
        return "\n\n".join(blocks)

    def __repr__(self) -> str:
        return f"Toolset({self.names})"


def _dotted(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
