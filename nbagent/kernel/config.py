"""How a kernel is started: workspace, limits, sandbox, environment, startup code."""

from __future__ import annotations

import keyword
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator


class KernelConfig(BaseModel):
    """Settings for one Jupyter kernel (and every kernel of a pool).

    Limits are per kernel process and reset when the kernel restarts.
    """

    model_config = ConfigDict(extra="forbid")

    workspace: Path | None = None
    """The kernel's working directory; a fresh temporary directory (removed on shutdown) when None."""
    memory_limit_mb: int | None = Field(default=None, gt=0)
    """Cap on the kernel's data memory (RLIMIT_DATA): allocations past it raise MemoryError in the cell."""
    cpu_time_limit_s: int | None = Field(default=None, gt=0)
    """CPU seconds the kernel process may use since its last (re)start (RLIMIT_CPU); past it, it dies."""
    sandbox: bool = False
    """Run the kernel in a bubblewrap sandbox: read-only system, private writable workspace, own PIDs,
    no network unless `allow_network`."""
    allow_network: bool = False
    """Let the sandboxed kernel use the network (an unsandboxed kernel always can). Tools that need the
    network run in the host and need no such permission."""
    private_processes: bool | None = None
    """Run the unsandboxed kernel in its own PID namespace with its own /proc, so that its code cannot
    read other processes' environments and command lines (the host's API keys). None (default): when
    bubblewrap works here, otherwise a one-time `UnprotectedKernelWarning`; True: required
    (`ConfigError` when impossible); False: off. The sandbox always has it."""
    env: dict[str, str] = Field(default_factory=dict)
    """Extra environment variables for the kernel. The host's environment is not passed through."""
    startup_code: list[str] = Field(default_factory=list)
    """Cells run after every start, restart and reset (imports, helpers). A failure raises KernelError."""
    preload: tuple[str, ...] = ()
    """Modules (dotted names) imported before any kernel code: by the template of forked kernels, so
    that their memory is shared copy-on-write, and at every (re)start of a launched kernel, so that both
    behave alike. They stay out of the user namespace (``import`` them to use them). A module that
    fails to import makes the start fail with a `KernelError` naming it."""
    merge_memory: bool = False
    """Let Linux merge the kernel's memory pages that are identical to another kernel's (KSM, Linux
    6.4+). Forked kernels dirty mostly the same pages of their template, so merging cuts their memory
    several times over, at the CPU cost of the kernel's scanning thread ``ksmd``. Needs KSM running
    (as root: ``echo 1 > /sys/kernel/mm/ksm/run``; a warning says when it is not). Off by default:
    merged pages let a kernel learn, by timing its writes, whether another kernel holds a page with
    the same contents."""
    grace_s: float = Field(default=3.0, ge=0)
    """After a timeout, how long the interrupted kernel has to come back before it is restarted."""
    start_timeout_s: float = Field(default=60.0, gt=0)
    """How long a kernel may take to start and answer."""
    max_output_chars: int = Field(default=2_000_000, ge=1000)
    """Characters of output kept per cell (head and tail halves); the middle of a flood is dropped."""

    @field_validator("preload")
    @classmethod
    def _module_names(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        for name in names:
            if not all(part.isidentifier() and not keyword.iskeyword(part) for part in name.split(".")):
                raise ValueError(f"{name!r} is not a module name (such as 'numpy' or 'xml.dom')")
        return names
