"""`nbagent-train`: the trainer's command line (typer).

Subcommands: `fit` and `sft` (offline: trajectory files -> weights, `cli.train`), `rl` (the online loop)
and `eval` (before/after tables, `cli.rl`). Their parameters are declared in `cli.options`.
"""

from __future__ import annotations

import logging
import signal
import threading

import typer
from rich.console import Console
from rich.text import Text

from nbagent.errors import NBAgentError
from nbagent_train.cli.rl import eval_command, rl_command
from nbagent_train.cli.train import fit_command, sft_command

app = typer.Typer(
    name="nbagent-train",
    help="RL fine-tuning from nbagent trajectories.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """RL fine-tuning from nbagent trajectories."""


app.command("fit")(fit_command)
app.command("sft")(sft_command)
app.command("rl")(rl_command)
app.command("eval")(eval_command)


def exit_on_sigterm() -> None:
    """Make SIGTERM (``kill``, a scheduler's cancel) end the process like Ctrl-C does, with exit code
    143: ``finally`` blocks and exit handlers run, so a launched vLLM server is stopped, not orphaned."""

    def terminate(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, terminate)


def main() -> None:
    """Console-script entry point: expected failures (nbagent's own errors: bad settings, paths, a locked
    run folder) end with one line ``error: ...`` on stderr and exit code 2."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    exit_on_sigterm()
    try:
        app()
    except NBAgentError as exc:
        Console(stderr=True).print(Text(f"error: {exc}"), style="red", highlight=False, soft_wrap=True)
        raise SystemExit(2) from None
