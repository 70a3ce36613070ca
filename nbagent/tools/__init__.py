"""Typed host functions that kernel code calls as plain Python functions.

`@tool` makes a typed function a `Tool` (JSON schema, prompt stub, validated invocation); a `Toolset`
groups tools by name; `RunContext` carries the application's dependencies into tools that ask for it;
`ToolBridge` makes a toolset callable from code running in a kernel (imported on first use, since it
needs the kernel runtime).
"""

from typing import TYPE_CHECKING, Any

from nbagent.errors import (
    ToolArgumentError,
    ToolDefinitionError,
    ToolError,
    ToolExecutionError,
    ToolResultError,
)
from nbagent.tools.run_context import RunContext
from nbagent.tools.tool import Tool, tool
from nbagent.tools.toolset import Toolset

if TYPE_CHECKING:
    from nbagent.tools.bridge import ToolBridge

__all__ = [
    "RunContext",
    "Tool",
    "ToolArgumentError",
    "ToolBridge",
    "ToolDefinitionError",
    "ToolError",
    "ToolExecutionError",
    "ToolResultError",
    "Toolset",
    "tool",
]


def __getattr__(name: str) -> Any:
    if name == "ToolBridge":
        from nbagent.tools.bridge import ToolBridge

        return ToolBridge
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
