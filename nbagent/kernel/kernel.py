"""`Kernel`: one real Jupyter kernel whose cells always end with a `CellResult`, never a hang.

Each cell is bounded: past its timeout the kernel is interrupted; if it does not come back within the
grace period it is restarted. A kernel that dies mid-cell (``os._exit``, a segfault, the OOM killer, a
CPU-time limit) is noticed within a tenth of a second, reported as ``crashed`` and restarted.
"""

from __future__ import annotations

import asyncio
import math
import shutil
import tempfile
import time
import weakref
from pathlib import Path
from types import TracebackType

from nbagent.errors import KernelError
from nbagent.kernel.boot import (
    BOOT_MODULE,
    INSTALL_CODE,
    boot_module_code,
    import_code,
    kernel_module_code,
    reset_code,
)
from nbagent.kernel.cell import CellEnd, CellRun, cell_result, follow, join_notes
from nbagent.kernel.config import KernelConfig
from nbagent.kernel.forked import ForkedProcess, ForkServer
from nbagent.kernel.outputs import OutputCollector
from nbagent.kernel.process import KernelProcess, ProcessHandle, log_tail
from nbagent.kernel.stdin import InputAnswers, InputHandler
from nbagent.trajectory import CellResult, CellStatus, ErrorOutput


class Kernel:
    """One Jupyter kernel (ipykernel, started with the host's Python) that runs cells.

    Use ``async with Kernel(config) as kernel:`` or call `start` and `shutdown`. `execute` returns a
    `CellResult` for every cell, whatever the cell does; it raises only for misuse (not started, shut
    down). Cells run one at a time; concurrent `execute` calls wait their turn.
    """

    def __init__(self, config: KernelConfig | None = None, *, forks: ForkServer | None = None) -> None:
        self.config = config or KernelConfig()
        self.generation = 0
        """Bumped every time the namespace is wiped (start, restart, reset): re-install what you defined."""
        self._forks = forks
        self._process: ProcessHandle = KernelProcess() if forks is None else ForkedProcess(forks)
        weakref.finalize(self, self._process.kill)
        self._state_dir: Path | None = None
        self._workspace: Path | None = None
        self._owns_workspace = False
        self._lock = asyncio.Lock()
        self._abandoned = False
        self._closed = False
        self._modules: set[str] = set()
        """Modules made by `kernel_module_code` in the current process."""
        self._reset_pending = False

    # -- life cycle ---------------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        """Whether the kernel process is running."""
        return self._process.alive

    @property
    def pid(self) -> int | None:
        """PID of the kernel's process (of bwrap when it runs under bwrap), or None when not running."""
        return self._process.pid

    @property
    def workspace(self) -> Path:
        """The kernel's working directory (valid after `start`)."""
        if self._workspace is None:
            raise KernelError("the kernel has no workspace yet: call `await kernel.start()` first")
        return self._workspace

    async def start(self) -> None:
        """Start the kernel and run the startup code. Raises `KernelError` when it cannot start."""
        if self._closed:
            raise KernelError("this kernel was shut down; create a new Kernel")
        if self._state_dir is not None:
            return
        parent = None if self._forks is None else self._forks.root
        self._state_dir = Path(tempfile.mkdtemp(prefix="nbagent-kernel-", dir=parent))
        if self.config.workspace is None:
            self._workspace = Path(tempfile.mkdtemp(prefix="nbagent-workspace-", dir=parent))
            self._owns_workspace = True
        else:
            self._workspace = self.config.workspace.expanduser().resolve()
            self._workspace.mkdir(parents=True, exist_ok=True)
        try:
            await self._launch()
        except BaseException:
            self._remove_dirs()
            self._state_dir = None
            raise

    async def restart(self) -> None:
        """Kill and restart the kernel process: every variable is gone, the startup code runs again."""
        async with self._lock:
            self._require_started()
            await self._relaunch()

    async def reset(self, *, lazy: bool = False, fresh: bool = False) -> None:
        """Give the next user a clean kernel: clear the namespace, go back to the workspace, run the
        startup code again (an own temporary workspace is emptied too). A kernel that is dead or was
        left mid-cell is restarted instead. Modules stay imported and threads keep running: restart
        for full isolation.

        With `lazy` (and no startup code), the clearing waits for the next cell and travels in the same
        message when that cell is an internal one (``store_history=False``, like an agent's set-up):
        one kernel round trip less per reuse, but the old objects stay in memory until then.
        `generation` changes at once either way. With `fresh`, a new process replaces the old one
        instead (`restart`, plus the emptied workspace): nothing of the last user is left."""
        async with self._lock:
            self._require_started()
            if self._owns_workspace:
                _empty_directory(self.workspace)
            if fresh:
                await self._relaunch()
                return
            if lazy and not self.config.startup_code and not self._abandoned and self.alive:
                self._reset_pending = True
                self.generation += 1
                return
            self._reset_pending = False
            if await self._revive() is None:
                await self._run_setup(before=reset_code(self.workspace))

    async def _pending_reset(self, *, merge: bool) -> str:
        """Run a lazy reset that is still due; with `merge`, return its code for the next cell instead."""
        if not self._reset_pending:
            return ""
        self._reset_pending = False
        code = reset_code(self.workspace) + INSTALL_CODE
        if merge:
            return code
        await self._run_internal(code, "the namespace reset")
        return ""

    async def shutdown(self) -> None:
        """Stop the kernel and remove its temporary files. Safe to call twice, or while a cell runs
        (that cell ends as ``crashed``)."""
        self.kill()
        async with self._lock:
            await self._process.stop()
            self._remove_dirs()

    def kill(self) -> None:
        """Kill the kernel process now, without awaiting anything (for emergencies and signal handlers).
        The kernel counts as shut down; `shutdown` still removes its files."""
        self._closed = True
        self._process.kill()

    async def __aenter__(self) -> Kernel:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.shutdown()

    def _require_started(self) -> None:
        if self._closed:
            raise KernelError("this kernel was shut down; create a new Kernel")
        if self._state_dir is None:
            raise KernelError("the kernel is not started: `await kernel.start()` or `async with Kernel()`")

    async def _launch(self) -> None:
        """Start the process and run the setup; on any failure, leave no process behind."""
        assert self._state_dir is not None
        assert self._workspace is not None
        try:
            self._modules = set(self._process.preloaded)
            self._reset_pending = False
            await self._process.launch(self.config, workspace=self._workspace, state_dir=self._state_dir)
            self._abandoned = False
            imported = () if self._forks is None else self._forks.config.preload  # by the template
            for module in self.config.preload:
                if module not in imported:
                    await self._run_internal(
                        import_code(module), f"importing {module!r} (KernelConfig.preload)"
                    )
            await self._run_setup()
        except BaseException:
            await self._process.stop()
            raise

    async def _relaunch(self) -> None:
        """Replace the process with a new one (see `_launch`)."""
        await self._process.stop()
        await self._launch()

    async def _run_setup(self, before: str = "") -> None:
        """nbagent's own set-up, after `before` in the same cell (one round trip), then the startup code."""
        boot = "" if BOOT_MODULE in self._modules else boot_module_code()
        await self._run_internal(f"{before}{boot}{INSTALL_CODE}", "nbagent's kernel setup")
        self._modules.add(BOOT_MODULE)
        for index, code in enumerate(self.config.startup_code):
            await self._run_internal(code, f"startup_code[{index}]")
        self.generation += 1

    async def ensure_module(self, name: str, source: str) -> None:
        """Make ``import name`` give the module built from `source` in the kernel (see
        `kernel_module_code`). The source is sent once per kernel process: resets keep the module, a
        restart sends it again. Raises `KernelError` if it fails."""
        async with self._lock:
            self._require_started()
            if name not in self._modules:
                await self._run_internal(kernel_module_code(name, source), f"loading the module {name}")
                self._modules.add(name)

    async def _run_internal(self, code: str, what: str) -> None:
        result = await self._run(code, self.config.start_timeout_s, None, store_history=False)
        if result.status is not CellStatus.OK:
            details = "\n".join(
                f"{out.ename}: {out.evalue}" for out in result.outputs if isinstance(out, ErrorOutput)
            )
            raise KernelError(f"{what} failed in the kernel ({result.status}): {details or result.note}")

    def _remove_dirs(self) -> None:
        if self._state_dir is not None:
            shutil.rmtree(self._state_dir, ignore_errors=True)
        if self._owns_workspace and self._workspace is not None:
            shutil.rmtree(self._workspace, ignore_errors=True)

    # -- cells --------------------------------------------------------------------------------------

    async def execute(
        self,
        code: str,
        timeout: float | None = 60.0,  # noqa: ASYNC109 (the cell's bound, enforced by interrupting the kernel)
        input_handler: InputHandler | None = None,
        *,
        store_history: bool = True,
    ) -> CellResult:
        """Run one cell and return what it did.

        `timeout` bounds the cell (None: no bound). `input_handler` answers the kernel's input
        requests (the tool bridge's calls); without one, kernel code cannot ask the host anything.
        ``input()`` in user code always raises a clear error: nobody is there to answer.
        """
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds or None, got {timeout!r}")
        async with self._lock:
            self._require_started()
            try:
                revived = await self._revive()
                prefix = await self._pending_reset(merge=not store_history)
            except KernelError as exc:
                return CellResult(code=code, status=CellStatus.CRASHED, state_lost=True, note=str(exc))
            result = await self._run(code, timeout, input_handler, store_history=store_history, prefix=prefix)
            if revived:
                result.state_lost = True
                result.note = join_notes(revived, result.note)
            return result

    async def ensure_running(self) -> str | None:
        """Restart the kernel if it died or was left mid-cell. Returns a sentence saying what happened
        (for the next result's note), or None when the kernel was fine. Raises `KernelError` when the
        restart fails."""
        async with self._lock:
            return await self._revive()

    async def _revive(self) -> str | None:
        self._require_started()
        if not self._abandoned and self.alive:
            return None
        before = (
            "The previous cell was abandoned mid-run"
            if self._abandoned
            else f"The kernel had died ({self._death_cause()})"
        )
        try:
            await self._relaunch()
        except KernelError as exc:
            raise KernelError(f"{before}, and restarting it failed: {exc}") from exc
        return f"{before}, so the kernel was restarted before this cell: earlier variables are gone."

    async def _run(
        self,
        code: str,
        limit_s: float | None,
        handler: InputHandler | None,
        *,
        store_history: bool,
        prefix: str = "",
    ) -> CellResult:
        """Run `prefix` + `code` as one cell; the result shows `code`."""
        kc = self._process.client
        started = time.monotonic()
        deadline = math.inf if limit_s is None else started + limit_s
        msg_id = kc.execute(
            prefix + code, store_history=store_history, allow_stdin=handler is not None, stop_on_error=False
        )
        run = CellRun(msg_id, OutputCollector(self.config.max_output_chars), last_activity=started)
        answers = None if handler is None else InputAnswers(kc, handler)
        self._abandoned = True
        try:
            end = await follow(self._process, run, answers, deadline=deadline, grace_s=self.config.grace_s)
            if end is not CellEnd.REPLIED:
                timed_out = limit_s if run.interrupted else None
                return await self._recover(code, started, run, timed_out, died=end is CellEnd.DIED)
        finally:
            if answers is not None:
                await answers.cancel()
        self._abandoned = False
        return cell_result(code, started, run, limit_s if run.interrupted else None)

    async def _recover(
        self, code: str, started: float, run: CellRun, timed_out: float | None, *, died: bool
    ) -> CellResult:
        """End a cell whose kernel died, or would not stop after its timeout (`timed_out` seconds), and
        restart the kernel."""
        overran = f"The cell ran past its timeout of {timed_out:g} s" if timed_out is not None else ""
        last_words = log_tail(self._state_dir) if died else ""
        if died:
            death = f"the kernel died ({self._death_cause()})"
            what = f"{overran}; after the interrupt, {death}" if overran else f"During this cell, {death}"
        else:
            what = f"{overran} and did not stop within {self.config.grace_s:g} s of an interrupt"
        await self._process.stop()
        if self._closed:
            note = "The kernel was shut down while this cell ran."
        else:
            try:
                await self._launch()
                note = (
                    f"{what}, so the kernel was restarted: all variables, imports and definitions are gone."
                )
            except KernelError as exc:
                note = f"{what}, and restarting the kernel failed ({exc}); the next cell will try again."
        if last_words:
            note += f"\nThe kernel's last log lines:\n{last_words}"
        return CellResult(
            code=code,
            status=CellStatus.TIMEOUT if timed_out is not None else CellStatus.CRASHED,
            outputs=run.collector.outputs(),
            execution_count=run.execution_count,
            duration_s=time.monotonic() - started,
            state_lost=True,
            note=join_notes(note, run.collector.dropped_note()),
        )

    def _death_cause(self) -> str:
        return self._process.death_cause(self.config)


def _empty_directory(path: Path) -> None:
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
