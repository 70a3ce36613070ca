"""Environments shipped with nbagent (installed as the `nbagent_environments` package)."""
