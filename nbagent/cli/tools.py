"""`nbagent tools`: the Python stubs the model will see for the given host tools and MCP servers."""

from __future__ import annotations

from nbagent.cli.options import (
    MCPHeaderOption,
    MCPOption,
    MCPUrlOption,
    ToolOption,
    load_tools,
    one_line_errors,
)


def tools_command(
    tool: ToolOption = None,
    mcp: MCPOption = None,
    mcp_url: MCPUrlOption = None,
    mcp_header: MCPHeaderOption = None,
) -> None:
    """Print the Python stubs of --tool functions and of the tools of --mcp / --mcp-url servers, as the
    model reads them in its system prompt (the agent adds submit_final_answer and the notepad)."""
    from nbagent.tools import Toolset

    with one_line_errors():
        toolset = Toolset(load_tools(tool, mcp, mcp_url, mcp_header))
        print(toolset.render_stubs() if toolset.names else "# no tools: pass --tool or --mcp / --mcp-url")
