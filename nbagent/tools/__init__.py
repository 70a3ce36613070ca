"""Typed host functions that kernel code calls as plain Python functions.

`@tool` makes a typed function a `Tool` (JSON schema, prompt stub, validated invocation); a `Toolset`
groups tools by name; `RunContext` carries the application's dependencies into tools that ask for it.
"""

from nbagent.errors import (
    ToolArgumentError,
    ToolDefinitionError,
    ToolError,
    ToolExecutionError,
    ToolResultError,
)
from nbagent.tools.context import RunContext
from nbagent.tools.tool import Tool, tool
from nbagent.tools.toolset import Toolset

__all__ = [
    "RunContext",
    "Tool",
    "ToolArgumentError",
    "ToolDefinitionError",
    "ToolError",
    "ToolExecutionError",
    "ToolResultError",
    "Toolset",
    "tool",
]
