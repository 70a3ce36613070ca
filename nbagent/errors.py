"""Exception classes shared across nbagent. Each message should say what to do next."""

from __future__ import annotations


class NBAgentError(Exception):
    """Base class of every error nbagent raises on purpose."""


class KernelError(NBAgentError):
    """A Jupyter kernel could not be started, reached or restarted."""


class ToolError(NBAgentError):
    """A tool was misdefined, misused or failed."""


class ConfigError(NBAgentError):
    """A setting is missing or invalid."""
