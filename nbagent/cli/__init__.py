"""The `nbagent` command line (`main` is the console script)."""

from nbagent.cli.app import main

__all__ = ["main"]
