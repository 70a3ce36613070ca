"""`KernelPool`: kernels started ahead of time and lent to one episode at a time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Literal

from nbagent.errors import KernelError
from nbagent.kernel.config import KernelConfig
from nbagent.kernel.forked import ForkServer
from nbagent.kernel.kernel import Kernel

log = logging.getLogger("nbagent.kernel")

ResetMode = Literal["namespace", "lazy", "restart"]
StartMode = Literal["launch", "fork"]


class KernelPool:
    """`size` kernels started together and leased one episode at a time.

    ``async with pool.lease() as kernel:`` waits for a free kernel. When the lease ends, the kernel is
    cleaned in the background before its next lease: ``reset="namespace"`` (default) clears its
    variables, goes back to its workspace and reruns the startup code; ``reset="lazy"`` does the same
    in the next lease's first internal cell (`Kernel.reset(lazy=True)`: one round trip less per lease,
    what `nbagent collect` uses); ``reset="restart"`` gives a fresh process and an emptied own
    workspace (full isolation, at about 0.13 s of CPU each forked, several times that launched). A
    kernel that died, timed out or was abandoned mid-cell is always restarted. With
    `KernelConfig.workspace` set, kernel ``i`` works in ``workspace/kernel-i``. Closing the pool (or
    cancelling the task that holds it) kills every kernel.

    ``start="launch"`` (default) starts every kernel as its own process; ``start="fork"`` forks them
    from one warm template (`ForkServer`: needs bubblewrap, Linux): each starts without importing
    anything, shares part of the template's memory, and is isolated from the others in namespaces
    of its own. `modules` (name to source, as `Kernel.ensure_module` takes them) are kernel-side
    modules the template loads before it forks, so that no kernel needs them sent; launched kernels
    get them when they are first ensured.
    """

    def __init__(
        self,
        size: int,
        config: KernelConfig | None = None,
        *,
        reset: ResetMode = "namespace",
        start: StartMode = "launch",
        modules: Mapping[str, str] | None = None,
    ) -> None:
        if size < 1:
            raise ValueError(f"a KernelPool needs at least one kernel, got size={size}")
        if reset not in ("namespace", "lazy", "restart"):
            raise ValueError(f"reset must be 'namespace', 'lazy' or 'restart', got {reset!r}")
        if start not in ("launch", "fork"):
            raise ValueError(f"start must be 'launch' or 'fork', got {start!r}")
        self.size = size
        self.config = config or KernelConfig()
        self.reset_mode: ResetMode = reset
        self.start_mode: StartMode = start
        self.modules = dict(modules or {})
        self._forks: ForkServer | None = None
        self._kernels: list[Kernel] = []
        self._idle: asyncio.Queue[Kernel] = asyncio.Queue()
        self._cleaning: set[asyncio.Task[None]] = set()
        self._started = False
        self._closed = False

    @property
    def kernels(self) -> list[Kernel]:
        """Every kernel of the pool, leased or not."""
        return list(self._kernels)

    def _config_for(self, index: int) -> KernelConfig:
        if self.config.workspace is None:
            return self.config
        return self.config.model_copy(update={"workspace": self.config.workspace / f"kernel-{index}"})

    async def start(self) -> None:
        """Start all kernels at once. Raises `KernelError` (after stopping the others) if one fails."""
        if self._closed:
            raise KernelError("this pool was closed; create a new KernelPool")
        if self._started:
            return
        self._started = True
        try:
            if self.start_mode == "fork":
                self._forks = ForkServer(self.config, self.modules)
                await self._forks.start()
            self._kernels = [Kernel(self._config_for(index), forks=self._forks) for index in range(self.size)]
            outcomes = await asyncio.gather(
                *(kernel.start() for kernel in self._kernels), return_exceptions=True
            )
        except BaseException:
            await self.aclose()
            raise
        failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        if failures:
            await self.aclose()
            raise KernelError(
                f"{len(failures)} of {self.size} kernels failed to start: {failures[0]}"
            ) from failures[0]
        for kernel in self._kernels:
            self._idle.put_nowait(kernel)

    @asynccontextmanager
    async def lease(self) -> AsyncIterator[Kernel]:
        """Borrow a kernel for one episode; it is cleaned and returned to the pool afterwards."""
        if not self._started or self._closed:
            raise KernelError(
                "the pool is not running: use `async with KernelPool(n) as pool` or `await pool.start()`"
            )
        kernel = await self._idle.get()
        try:
            yield kernel
        finally:
            if self._closed:
                await kernel.shutdown()
            else:
                task = asyncio.get_running_loop().create_task(self._clean(kernel))
                self._cleaning.add(task)
                task.add_done_callback(self._cleaning.discard)

    async def _clean(self, kernel: Kernel) -> None:
        try:
            await kernel.reset(lazy=self.reset_mode == "lazy", fresh=self.reset_mode == "restart")
        except (KernelError, OSError) as exc:
            # Lend it anyway: its next cell restarts it, or reports why it cannot.
            log.warning("could not reset a pooled kernel (%s); its next cell will restart it", exc)
        self._idle.put_nowait(kernel)

    async def aclose(self) -> None:
        """Kill every kernel (leased ones too) and remove their files."""
        self._closed = True
        for kernel in self._kernels:
            kernel.kill()
        for task in list(self._cleaning):
            task.cancel()
        try:
            await asyncio.gather(*self._cleaning, return_exceptions=True)
            await asyncio.gather(*(kernel.shutdown() for kernel in self._kernels), return_exceptions=True)
        finally:  # when cancelled too: the template holds the forks' sockets and folders
            if self._forks is not None:
                await self._forks.aclose()

    async def __aenter__(self) -> KernelPool:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
