"""Kernels forked from a warm template: `ForkServer` (the template process) and `ForkedProcess`.

A `ForkServer` runs `nbagent.kernel.forkserver` in bubblewrap, set up like a kernel of its
`KernelConfig` (sandbox or private processes), and asks it for one forked kernel at a time over a
pipe. Forked kernels share the template's imported modules copy-on-write, start in milliseconds
instead of half a second, and each isolates itself in its own namespaces (see the forkserver module).
`ForkedProcess` is the process of one `Kernel` whose kernels come from a server; it speaks the same
Jupyter protocol over the same channels as a launched kernel.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import weakref
from collections.abc import Mapping
from pathlib import Path

import zmq
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.connect import write_connection_file

from nbagent.errors import ConfigError, KernelError
from nbagent.kernel import channels
from nbagent.kernel.boot import BOOT_MODULE, kernel_module_code
from nbagent.kernel.config import KernelConfig
from nbagent.kernel.env_vars import kernel_environment, kernel_process_environment
from nbagent.kernel.launch import (
    KERNEL_FLAGS,
    LEAN_KERNEL,
    bwrap_unusable,
    python_under_tmpfs,
    rlimits,
    template_plan,
)
from nbagent.kernel.process import describe_exit, file_tail, log_tail

log = logging.getLogger("nbagent.kernel")

_FORKSERVER = Path(__file__).with_name("forkserver.py")
_INKERNEL = Path(__file__).with_name("inkernel.py")


def fork_unavailable(config: KernelConfig) -> str | None:
    """Why kernels of `config` cannot be forked here (they need bubblewrap's namespaces), or None."""
    if not config.sandbox and config.private_processes is False:
        return "KernelConfig(private_processes=False) asks for kernels without namespaces"
    return bwrap_unusable()


class ForkServer:
    """The template process that forks every kernel of one `KernelConfig` (its `preload` imported,
    and the kernel-side `modules` loaded: name to source, as `Kernel.ensure_module` takes them).

    Start it with `start` (or let the first `spawn` do it); `aclose` ends it, and every kernel it
    forked with it. If the template dies, the next `spawn` starts a new one. Kernels' folders live in
    `root` (or, for a configured workspace, under it), which the template's sandbox can reach.
    """

    def __init__(self, config: KernelConfig, modules: Mapping[str, str] | None = None) -> None:
        reason = fork_unavailable(config)
        if reason is not None:
            raise ConfigError(f"kernels cannot be forked from a template here: {reason}")
        self.config = config
        self.modules = dict(modules or {})
        """Kernel-side modules (name to source) the template loads before it forks."""
        self.root = Path(tempfile.mkdtemp(prefix="nbagent-forks-"))
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._spawns: dict[int, asyncio.Future[int]] = {}
        self._live: set[int] = set()
        self._exits: dict[int, int | None] = {}
        self._counter = 0
        self.context = channels.new_context()
        """The one ZMQ context of every forked kernel's client."""
        self._starting = asyncio.Lock()
        self._closed = False
        self._finalizer = weakref.finalize(self, _kill_group, None)

    @property
    def running(self) -> bool:
        """Whether the template process is up."""
        return self._process is not None and self._process.returncode is None

    async def start(self) -> None:
        """Start the template and wait until it has imported everything. Raises `KernelError`."""
        async with self._starting:
            if self._closed:
                raise KernelError("this fork server was closed")
            if self.running:
                return
            await self._launch()

    async def _launch(self) -> None:
        folders = [self.root] + (
            [self.config.workspace.expanduser().resolve()] if self.config.workspace else []
        )
        settings = {
            "limits": rlimits(self.config),
            "network": self.config.allow_network or not self.config.sandbox,
            "sandbox": self.config.sandbox,
            "hide": [str(folder) for folder in folders],
            "keep": [str(path) for path in python_under_tmpfs()],
            "boot": str(_INKERNEL),
            "boot_name": BOOT_MODULE,
            "kernel_app": str(LEAN_KERNEL),
            "preload": list(self.config.preload),
            "modules": [kernel_module_code(name, source) for name, source in self.modules.items()],
            "kernel_flags": list(KERNEL_FLAGS),
        }
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)
        plan = template_plan(self.config, script=_FORKSERVER, settings=settings, folders=folders)
        env = kernel_environment(
            self.config.env, home=self.root, state_dir=self.root, sandbox=self.config.sandbox
        )
        with (self.root / "template.log").open("wb") as stderr:
            try:
                process = await asyncio.create_subprocess_exec(
                    *plan.argv,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=stderr,
                    env=env,
                    cwd=self.root,
                    start_new_session=True,
                    limit=1 << 20,
                )
            except OSError as exc:
                raise KernelError(f"could not launch the kernel template: {exc}") from exc
        self._process = process
        self._finalizer.detach()
        self._finalizer = weakref.finalize(self, _kill_group, process.pid)
        assert process.stdout is not None
        try:
            first = await asyncio.wait_for(process.stdout.readline(), self.config.start_timeout_s)
        except TimeoutError:
            first = b""
        if json.loads(first or b"{}").get("ready") is not True:
            await self._stop_process()
            tail = file_tail(self.root / "template.log") or "(empty)"
            names = ", ".join(self.config.preload)
            preload = f" (it imports KernelConfig.preload: {names})" if names else ""
            raise KernelError(f"the kernel template did not start{preload}. Its log ends with:\n{tail}")
        self._reader = asyncio.get_running_loop().create_task(self._read(process))

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        while line := await process.stdout.readline():
            message = json.loads(line)
            if "exited" in message:
                pid = int(message["exited"])
                if pid in self._live:
                    self._live.discard(pid)
                    self._exits[pid] = message["returncode"]
            elif "spawned" in message:
                future = self._spawns.pop(int(message["spawned"]), None)
                if future is None or future.done():
                    continue
                if "pid" in message:
                    self._live.add(int(message["pid"]))
                    future.set_result(int(message["pid"]))
                else:
                    future.set_exception(
                        KernelError(f"the forked kernel could not start: {message['error']}")
                    )
        # The template ended: its sandbox took every kernel with it.
        for pid in self._live:
            self._exits[pid] = None
        self._live.clear()
        for future in self._spawns.values():
            if not future.done():
                future.set_exception(KernelError(self.template_death()))
        self._spawns.clear()

    def template_death(self) -> str:
        """Why the template ended, with the end of its log."""
        tail = file_tail(self.root / "template.log")
        return "the kernel template process ended" + (f"; its log ends with:\n{tail}" if tail else "")

    async def spawn(
        self, *, connection_file: Path, state_dir: Path, workspace: Path, env: dict[str, str]
    ) -> int:
        """Fork a kernel; returns its PID in the template's namespace. Raises `KernelError`."""
        await self.start()
        process = self._process
        assert process is not None
        assert process.stdin is not None
        self._counter += 1
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._spawns[self._counter] = future
        request = {
            "spawn": self._counter,
            "connection_file": str(connection_file),
            "state_dir": str(state_dir),
            "workspace": str(workspace),
            "env": env,
        }
        try:
            process.stdin.write(json.dumps(request).encode() + b"\n")
        except (OSError, RuntimeError) as exc:
            self._spawns.pop(self._counter, None)
            raise KernelError(f"the kernel template is gone ({exc}); the next start tries again") from exc
        return await future

    def alive(self, pid: int) -> bool:
        """Whether the forked kernel `pid` is running."""
        return pid in self._live

    def has_ended(self, pid: int) -> bool:
        """Whether the template saw the kernel `pid` end (or ended itself)."""
        return pid in self._exits

    def exit_status(self, pid: int) -> int | None:
        """The exit status of an ended kernel (negative: its signal); None when the template died."""
        return self._exits.get(pid)

    def kill(self, pid: int) -> None:
        """Kill one forked kernel (SIGKILL, sent by the template)."""
        process = self._process
        if pid not in self._live or process is None or process.stdin is None:
            return
        with contextlib.suppress(OSError, RuntimeError):
            process.stdin.write(json.dumps({"kill": pid}).encode() + b"\n")

    async def aclose(self) -> None:
        """End the template and every kernel it forked; remove its folder."""
        self._closed = True
        try:
            await self._stop_process()
        finally:  # also when cancelled: the kill is sent already, and nothing here blocks
            self.context.destroy(linger=0)
            shutil.rmtree(self.root, ignore_errors=True)

    async def _stop_process(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            _kill_group(process.pid)
            if process.stdin is not None:
                process.stdin.close()
            await process.wait()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        self._finalizer.detach()


def _kill_group(pid: int | None) -> None:
    if pid is None:
        return
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)


class ForkedProcess:
    """The current process of one `Kernel` whose kernels are forked by a `ForkServer`."""

    @property
    def preloaded(self) -> frozenset[str]:
        """Kernel-side modules every forked kernel already has: the boot module and the server's."""
        return frozenset({BOOT_MODULE, *self.server.modules})

    def __init__(self, server: ForkServer) -> None:
        self.server = server
        self._pid: int | None = None
        self._kc: BlockingKernelClient | None = None

    @property
    def alive(self) -> bool:
        """Whether the process is running."""
        return self._pid is not None and self.server.alive(self._pid)

    @property
    def pid(self) -> int | None:
        """PID of the kernel in its template's PID namespace, or None when not running."""
        return self._pid if self.alive else None

    @property
    def client(self) -> BlockingKernelClient:
        """The client of the kernel's channels."""
        assert self._kc is not None
        return self._kc

    def death_cause(self, config: KernelConfig) -> str:
        """Why the process ended (see `describe_exit`)."""
        if self._pid is None:
            return "its process vanished"
        if not self.server.has_ended(self._pid):
            return describe_exit(None, config, wrapped=False)
        status = self.server.exit_status(self._pid)
        if status is None:
            return self.server.template_death()
        return describe_exit(status, config, wrapped=False)

    async def launch(self, config: KernelConfig, *, workspace: Path, state_dir: Path) -> None:
        """Fork a kernel and wait until it answers. Raises `KernelError` when it cannot."""
        connection_file = state_dir / "kernel.json"
        write_connection_file(
            str(connection_file),
            transport="ipc",
            ip=str(state_dir / "k"),
            key=secrets.token_hex(16).encode(),
            shell_port=1,
            iopub_port=2,
            stdin_port=3,
            hb_port=4,
            control_port=5,
        )
        env = kernel_process_environment(config, state_dir)
        self._pid = await self.server.spawn(
            connection_file=connection_file, state_dir=state_dir, workspace=workspace, env=env
        )
        self._kc = kc = channels.client(str(connection_file), self.server.context)
        if await channels.wait_ready(kc, timeout_s=config.start_timeout_s, alive=lambda: self.alive):
            return
        if not self.alive:
            cause = self.death_cause(self.server.config)
            tail = log_tail(state_dir) or "(empty)"
            raise KernelError(f"the kernel died while starting ({cause}). Its log ends with:\n{tail}")
        raise KernelError(f"the kernel did not answer within {config.start_timeout_s:g} s of being forked")

    async def interrupt(self) -> None:
        """Interrupt the running cell with an interrupt_request on the control channel."""
        if self._kc is None:
            return
        try:
            self._kc.control_channel.send(self._kc.session.msg("interrupt_request", content={}))
        except (OSError, RuntimeError, zmq.ZMQError) as exc:
            log.warning("interrupting the kernel failed: %s", exc)

    async def stop(self) -> None:
        """Close the channels and kill the process."""
        kc, self._kc = self._kc, None
        if kc is not None:
            kc.stop_channels()
        self.kill()

    def kill(self) -> None:
        """Kill the process now (also run when the `Kernel` is dropped)."""
        if self._pid is not None:
            self.server.kill(self._pid)
