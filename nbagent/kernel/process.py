"""`KernelProcess`: the process behind a `Kernel` (launch, channels, interrupt, stop) and its death.

Its stderr goes to ``kernel.log`` in the kernel's state directory, whose last lines `log_tail` gives for
error messages; `describe_exit` turns an exit status into the cause of death.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from pathlib import Path
from typing import Protocol

import zmq
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from jupyter_client.manager import AsyncKernelManager

from nbagent.errors import KernelError
from nbagent.kernel import channels
from nbagent.kernel.config import KernelConfig
from nbagent.kernel.env_vars import kernel_process_environment
from nbagent.kernel.launch import launch_plan

log = logging.getLogger("nbagent.kernel")

_LOG_TAIL_BYTES = 4000


class _SingleSpec(KernelSpecManager):
    """Hands jupyter_client our own kernel spec instead of looking one up on disk."""

    def __init__(self, spec: KernelSpec) -> None:
        super().__init__()
        self._nbagent_spec = spec

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        return self._nbagent_spec


class _ProcessGuard:
    """Kills the kernel's process group if its `Kernel` is dropped or the host exits without shutdown."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except OSError:
            process.kill()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            log.warning("kernel process %d did not exit after SIGKILL", process.pid)


def describe_exit(returncode: int | None, config: KernelConfig, *, wrapped: bool) -> str:
    """Why a kernel process with this exit status (None: no process) ended, as a phrase."""
    if returncode is None:
        return "its process vanished"
    signum = -returncode if returncode < 0 else returncode - 128 if wrapped and returncode > 128 else 0
    if not signum:
        return f"its process exited with code {returncode}"
    if signum == signal.SIGXCPU or (signum == signal.SIGKILL and config.cpu_time_limit_s is not None):
        cpu = f" or its CPU-time limit of {config.cpu_time_limit_s} s was reached"
    else:
        cpu = ""
    reasons: dict[int, str] = {
        signal.SIGKILL: f"killed by SIGKILL: out of memory, or killed from outside{cpu}",
        signal.SIGSEGV: "segmentation fault (SIGSEGV)",
        signal.SIGABRT: "aborted (SIGABRT)",
        signal.SIGBUS: "bus error (SIGBUS)",
        signal.SIGXCPU: f"it used up its CPU-time limit of {config.cpu_time_limit_s} s (SIGXCPU)",
    }
    return reasons.get(signum, f"killed by {signal.Signals(signum).name}")


def log_tail(state_dir: Path | None) -> str:
    """The last non-empty lines of the kernel's stderr log, or "" when there is none."""
    return "" if state_dir is None else file_tail(state_dir / "kernel.log")


def file_tail(path: Path) -> str:
    """The last non-empty lines of a log file, or "" when it cannot be read."""
    try:
        with path.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - _LOG_TAIL_BYTES))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(lines[-8:])


class ProcessHandle(Protocol):
    """What a `Kernel` needs of its process: a launched one (`KernelProcess`) or a forked one."""

    @property
    def preloaded(self) -> frozenset[str]:
        """Kernel-side modules (see `Kernel.ensure_module`) a new process already has."""
        ...

    @property
    def alive(self) -> bool: ...
    @property
    def pid(self) -> int | None: ...
    @property
    def client(self) -> BlockingKernelClient: ...
    def death_cause(self, config: KernelConfig) -> str: ...
    async def launch(self, config: KernelConfig, *, workspace: Path, state_dir: Path) -> None: ...
    async def interrupt(self) -> None: ...
    async def stop(self) -> None: ...
    def kill(self) -> None: ...


class KernelProcess:
    """The current process of one `Kernel`, launched again in place at every restart."""

    preloaded: frozenset[str] = frozenset()

    def __init__(self) -> None:
        self._km: AsyncKernelManager | None = None
        self._kc: BlockingKernelClient | None = None
        self._guard = _ProcessGuard()
        self._wrapped = False
        """Whether the current process runs under bwrap (set at each launch)."""

    @property
    def alive(self) -> bool:
        """Whether the process is running."""
        return self._guard.alive()

    @property
    def pid(self) -> int | None:
        """PID of the process (of bwrap when it runs under bwrap), or None when not running."""
        process = self._guard.process
        return process.pid if process is not None and process.poll() is None else None

    @property
    def client(self) -> BlockingKernelClient:
        """The client of the launched process's channels."""
        assert self._kc is not None
        return self._kc

    def death_cause(self, config: KernelConfig) -> str:
        """Why the process ended (see `describe_exit`)."""
        process = self._guard.process
        returncode = None if process is None else process.poll()
        return describe_exit(returncode, config, wrapped=self._wrapped)

    async def launch(self, config: KernelConfig, *, workspace: Path, state_dir: Path) -> None:
        """Start the kernel process and wait until it answers. Raises `KernelError` when it cannot."""
        plan = launch_plan(config, workspace=workspace, state_dir=state_dir)
        self._wrapped = plan.wrapped
        spec = KernelSpec(
            argv=plan.argv, display_name="nbagent", language="python", interrupt_mode=plan.interrupt_mode
        )
        km = AsyncKernelManager(
            kernel_spec_manager=_SingleSpec(spec),
            kernel_name="nbagent",
            transport="ipc",
            connection_file=str(state_dir / "kernel.json"),
        )
        self._km = km
        with (state_dir / "kernel.log").open("wb") as stderr:
            try:
                await km.start_kernel(
                    env=kernel_process_environment(config, state_dir),
                    cwd=str(workspace),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                )
            except OSError as exc:
                raise KernelError(f"could not launch the kernel process: {exc}") from exc
        self._guard.process = km.provisioner.process  # type: ignore[union-attr]
        self._kc = kc = channels.client(km.connection_file, channels.shared_context())
        if not await channels.wait_ready(kc, timeout_s=config.start_timeout_s, alive=self._guard.alive):
            why = (
                f"it died ({self.death_cause(config)})"
                if not self._guard.alive()
                else f"it did not answer within {config.start_timeout_s:g} s"
            )
            raise KernelError(
                f"the kernel did not start: {why}. Its log ends with:\n{log_tail(state_dir) or '(empty)'}"
            )

    async def interrupt(self) -> None:
        """Interrupt the running cell (a signal or an interrupt_request, as the launch plan says)."""
        assert self._km is not None
        try:
            await self._km.interrupt_kernel()
        except (OSError, RuntimeError, zmq.ZMQError) as exc:
            log.warning("interrupting the kernel failed: %s", exc)

    async def stop(self) -> None:
        """Close the channels and end the process, killing it when it does not go."""
        kc, km = self._kc, self._km
        self._kc = self._km = None
        if kc is not None:
            kc.stop_channels()
        if km is not None and km.has_kernel:
            try:
                await km.shutdown_kernel(now=True)
            except (OSError, RuntimeError, zmq.ZMQError) as exc:
                log.warning("shutting down the kernel failed (%s); killing it", exc)
        self._guard.kill()
        self._guard.process = None

    def kill(self) -> None:
        """Kill the process group now, without awaiting anything (also run when the `Kernel` is dropped)."""
        self._guard.kill()
