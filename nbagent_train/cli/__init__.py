"""`nbagent-train`: the trainer's command line (`main` is the console script)."""

from nbagent_train.cli.app import main

__all__ = ["main"]
