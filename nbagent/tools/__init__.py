"""Typed host functions that kernel code calls as plain Python functions.

`@tool` makes a typed function a `Tool` (JSON schema, prompt stub, validated invocation); a `Toolset`
groups tools by name; `RunContext` carries the application's dependencies into tools that ask for it;
`ToolBridge` makes a toolset callable from code running in a kernel; `MCPServer` turns the tools of an
MCP server into tools (those two are imported on first use: they need the kernel runtime and the optional
`mcp` package).
"""

from typing import TYPE_CHECKING, Any

from nbagent.errors import (
    ToolArgumentError,
    ToolDefinitionError,
    ToolError,
    ToolExecutionError,
    ToolResultError,
)
from nbagent.tools.results import ToolReturn
from nbagent.tools.run_context import RunContext
from nbagent.tools.tool import Tool, tool
from nbagent.tools.toolset import Toolset

if TYPE_CHECKING:
    from nbagent.tools.bridge import ToolBridge
    from nbagent.tools.mcp import MCPServer, MCPServerError, mcp_servers, mcp_tools

__all__ = [
    "MCPServer",
    "MCPServerError",
    "RunContext",
    "Tool",
    "ToolArgumentError",
    "ToolBridge",
    "ToolDefinitionError",
    "ToolError",
    "ToolExecutionError",
    "ToolResultError",
    "ToolReturn",
    "Toolset",
    "mcp_servers",
    "mcp_tools",
    "tool",
]


def __getattr__(name: str) -> Any:
    if name == "ToolBridge":
        from nbagent.tools.bridge import ToolBridge

        return ToolBridge
    if name in ("MCPServer", "MCPServerError", "mcp_servers", "mcp_tools"):
        try:
            from nbagent.tools import mcp
        except ModuleNotFoundError as exc:
            if exc.name is None or not exc.name.startswith(("mcp", "httpx2")):
                raise
            raise ImportError(
                f"{name} needs the MCP client, which is not installed: pip install 'nbagent[mcp]'"
            ) from exc
        return getattr(mcp, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
