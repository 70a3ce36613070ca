"""The notebook runtime: real Jupyter kernels with bounded cells, limits, a sandbox and a pool."""

from nbagent.kernel.boot import kernel_module_code
from nbagent.kernel.config import KernelConfig
from nbagent.kernel.kernel import Kernel
from nbagent.kernel.pool import KernelPool
from nbagent.kernel.render import render_cell, strip_ansi, truncate_middle
from nbagent.kernel.stdin import InputHandler
from nbagent.trajectory import (
    CellOutput,
    CellResult,
    CellStatus,
    DisplayData,
    ErrorOutput,
    ExecuteResult,
    StreamOutput,
    ToolCallRecord,
)

__all__ = [
    "CellOutput",
    "CellResult",
    "CellStatus",
    "DisplayData",
    "ErrorOutput",
    "ExecuteResult",
    "InputHandler",
    "Kernel",
    "KernelConfig",
    "KernelPool",
    "StreamOutput",
    "ToolCallRecord",
    "kernel_module_code",
    "render_cell",
    "strip_ansi",
    "truncate_middle",
]
