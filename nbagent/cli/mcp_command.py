"""`nbagent mcp`: a persistent, sandboxed notebook kernel served to MCP clients (`nbagent.cli.mcp_server`).

This module stays light (typer and the shared options only): the `mcp` SDK, an optional extra, is
imported when the command runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from nbagent.cli.options import AgentFlags, SandboxOption, fail, one_line_errors, with_flag_groups

DEFAULT_PORT = 8765
"""Not 8000, where vLLM and other model servers listen by default."""
DEFAULT_OUTPUT_CHARS = 20_000
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class McpAgentFlags(AgentFlags):
    """`run`'s model and agent flags; the kernel is sandboxed by default, since any client sends code.
    `--cell-timeout` is `run_cell`'s default timeout; the model flags configure `ask_agent`."""

    sandbox: SandboxOption = True


@with_flag_groups
def mcp_command(
    *,
    flags: McpAgentFlags,
    http: Annotated[
        bool, typer.Option("--http", help="Serve streamable HTTP at http://HOST:PORT/mcp instead of stdio.")
    ] = False,
    host: Annotated[str, typer.Option("--host", help="Address to listen on with --http.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="Port with --http (0: any free one; printed).")
    ] = DEFAULT_PORT,
    workspace: Annotated[
        Path | None,
        typer.Option(
            "--workspace",
            help="The kernel's working directory, the only one it may write in the sandboxed kernel "
            "(default: a temporary folder, removed at exit).",
            show_default=False,
        ),
    ] = None,
    memory_limit_mb: Annotated[
        int | None,
        typer.Option("--memory-limit-mb", min=1, help="Data memory of the kernel; past it, MemoryError."),
    ] = None,
    cpu_time_limit: Annotated[
        int | None,
        typer.Option(
            "--cpu-time-limit", min=1, help="CPU seconds per kernel process; past them it restarts."
        ),
    ] = None,
    output_chars: Annotated[
        int,
        typer.Option("--output-chars", min=100, help="Characters of text a cell returns (head and tail)."),
    ] = DEFAULT_OUTPUT_CHARS,
    ask_agent: Annotated[
        bool | None,
        typer.Option(
            "--ask-agent/--no-ask-agent",
            help="Offer the tool ask_agent (default: when a model is configured: --base-url, its "
            "environment variables, or --local-model; --ask-agent alone runs the embedded model).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Serve a persistent notebook kernel as MCP tools (run_cell, reset, list_variables, ask_agent)."""
    console = Console(stderr=True, highlight=False)
    try:
        import mcp  # noqa: F401 (checked here: an optional extra)
    except ImportError:
        fail("nbagent mcp needs the MCP SDK: pip install 'nbagent[mcp]'")
    from nbagent.kernel.launch import bwrap_unusable

    if flags.sandbox and (reason := bwrap_unusable()) is not None:
        fail(f"the sandbox cannot run here ({reason}); pass --no-sandbox to serve an unsandboxed kernel.")
    if workspace is not None:
        try:
            workspace.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            fail(f"--workspace {workspace}: {exc.strerror or exc}")
    if http and host not in LOOPBACK:
        console.print(
            Text(f"Anyone who can reach {host}:{port} can run code in this kernel.", style="yellow")
        )
    with one_line_errors():
        config = flags.kernel_config(
            workspace=workspace, memory_limit_mb=memory_limit_mb, cpu_time_limit_s=cpu_time_limit
        )

    import anyio

    from nbagent.cli.mcp_server import build_server, listen, serve
    from nbagent.cli.notebook_session import NotebookSession

    with one_line_errors():
        listener = listen(host, port) if http else None
        if ask_agent if ask_agent is not None else bool(flags.base_url or flags.local_model):
            choice = flags.model_choice()
            session = NotebookSession(config, choice.model, flags.agent_settings(choice))
            console.print(Text(f"ask_agent: {choice.description}", style="dim"), soft_wrap=True)
        else:
            session = NotebookSession(config)
        server = build_server(session, cell_timeout=flags.cell_timeout, output_chars=output_chars)
    anyio.run(serve, server, session, listener)
