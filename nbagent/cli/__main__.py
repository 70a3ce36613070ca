"""``python -m nbagent.cli``: the `nbagent` command."""

from nbagent.cli.app import main

main()
