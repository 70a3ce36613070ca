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


class ToolDefinitionError(ToolError):
    """A function cannot be made into a tool (missing annotations, bad name, unresolvable types)."""


class ToolArgumentError(ToolError):
    """A tool was called with arguments that do not fit its signature or types."""


class ToolExecutionError(ToolError):
    """A tool's own function raised; carries the original exception's type name and message."""

    def __init__(self, tool: str, error_type: str, error_message: str) -> None:
        super().__init__(f"tool {tool!r} failed with {error_type}: {error_message}")
        self.tool = tool
        self.error_type = error_type
        self.error_message = error_message


class ToolResultError(ToolError):
    """A tool returned a value that cannot be sent back as JSON."""


class UnprotectedKernelWarning(UserWarning):
    """Kernels run without the protection nbagent asks for by default (see `KernelConfig`)."""


class OutputPathError(ConfigError):
    """An output path cannot be written (a folder where a file goes, a file among its parents, ...)."""


class OutputLockedError(NBAgentError):
    """Another process holds the lock on an output (see `nbagent.output_files.OutputLock`)."""
