"""The `nbagent` typer app: every command, registered here, and the console-script entry point.

`run` answers one question (`nbagent.cli.run`), `show` and `export` read trajectory files
(`nbagent.cli.trajectories`), `collect` and `eval` run an environment's episodes (`nbagent.cli.collect`),
`tools` prints the stubs the model sees (`nbagent.cli.tools`), `mcp` serves a notebook to MCP clients
(`nbagent.cli.mcp_command`), `view` browses episodes and run folders (`nbagent.cli.view`).
The model and agent flags they share are declared once, in `nbagent.cli.options`.
"""

from __future__ import annotations

import os

import typer

from nbagent.cli.collect import collect_command, eval_command
from nbagent.cli.mcp_command import mcp_command
from nbagent.cli.run import run
from nbagent.cli.tools import tools_command
from nbagent.cli.trajectories import export, show
from nbagent.cli.view import view_command

app = typer.Typer(
    name="nbagent",
    help="Notebook agents that act by writing Python in a real Jupyter kernel.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("run")(run)
app.command("show")(show)
app.command("export")(export)
app.command("collect")(collect_command)
app.command("eval")(eval_command)
app.command("tools")(tools_command)
app.command("mcp")(mcp_command)
app.command("view")(view_command)


def main() -> None:
    """Console-script entry point."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no weight-loading bars between steps
    app(prog_name="nbagent")
