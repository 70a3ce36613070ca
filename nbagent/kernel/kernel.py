"""`Kernel`: one real Jupyter kernel whose cells always end with a `CellResult`, never a hang.

Each cell is bounded: past its timeout the kernel is interrupted; if it does not come back within the
grace period it is restarted. A kernel that dies mid-cell (``os._exit``, a segfault, the OOM killer, a
CPU-time limit) is noticed within a tenth of a second, reported as ``crashed`` and restarted.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
import math
import os
import shutil
import signal
import subprocess
import tempfile
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import zmq
import zmq.asyncio
from jupyter_client.asynchronous.client import AsyncKernelClient
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from jupyter_client.session import Session

from nbagent.errors import KernelError
from nbagent.kernel.config import KernelConfig
from nbagent.kernel.env_vars import kernel_environment
from nbagent.kernel.launch import launch_plan
from nbagent.kernel.outputs import OutputCollector
from nbagent.trajectory import CellResult, CellStatus, ErrorOutput

InputHandler = Callable[[str, bool], Awaitable[str]]
"""Answers an ``input_request`` of the kernel: gets (prompt, password), returns the reply text."""

log = logging.getLogger("nbagent.kernel")

_ALIVE_CHECK_S = 0.1
"""How often a silent kernel is checked for death while a cell runs."""
_EOF = "\x04"
"""An input_reply of this value makes ipykernel raise EOFError in the kernel."""
_LOG_TAIL_BYTES = 4000
_ANSWER_CANCEL_WAIT_S = 1.0
_IDLE_GRACE_S = 3.0
"""After the reply, how long a silent output channel is waited on for the (possibly dropped) idle."""


_BOOT_MODULE = "_nbagent_kernel"


@functools.cache
def _boot_source() -> str:
    return resources.files("nbagent.kernel").joinpath("inkernel.py").read_text(encoding="utf-8")


def kernel_module_code(name: str, source: str) -> str:
    """Kernel code that creates the module `name` from `source` unless it exists, outside the user
    namespace (so ``%reset`` keeps it), with its source registered for tracebacks. It leaves no names
    in the user namespace."""
    filename = f"<{name}>"
    loader = (
        "import linecache, sys, types\n"
        f"if {name!r} not in sys.modules:\n"
        f"    linecache.cache[{filename!r}] = (len(SOURCE), None, SOURCE.splitlines(True), {filename!r})\n"
        f"    module = types.ModuleType({name!r})\n"
        f"    module.__file__ = {filename!r}\n"
        f"    sys.modules[{name!r}] = module\n"
        f"    exec(compile(SOURCE, {filename!r}, 'exec'), module.__dict__)\n"
    )
    return f"exec({loader!r}, {{'SOURCE': {source!r}}})\n"


# Clears the user's names (IPython's own hidden ones stay) and the output cache. About half the cost of
# `%reset -f`, which also runs a full garbage collection and rebuilds the namespace (measured: 25 ms vs
# 49 ms under load); the pool runs this between every two episodes.
_RESET_CODE = (
    "def _nb_reset(ip):\n"
    "    ns = ip.user_ns\n"
    "    for name in [n for n in ns if n not in ip.user_ns_hidden and not n.startswith('__')]:\n"
    "        del ns[name]\n"
    "    ns.get('Out', {{}}).clear()\n"
    "_nb_reset(get_ipython())\n"
    "import os as _nb_os\n_nb_os.chdir({workspace!r})\ndel _nb_os\n"
)


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


def _describe_exit(returncode: int | None, config: KernelConfig, *, wrapped: bool) -> str:
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


@dataclass
class _CellRun:
    """What has come back so far for one cell (messages of other requests are ignored)."""

    msg_id: str
    collector: OutputCollector
    last_activity: float
    reply: dict[str, Any] | None = None
    idle: bool = False
    execution_count: int | None = None

    def on_iopub(self, msg: dict[str, Any]) -> None:
        if msg["parent_header"].get("msg_id") != self.msg_id:
            return
        self.last_activity = time.monotonic()
        msg_type, content = msg["header"]["msg_type"], msg["content"]
        if msg_type == "status":
            self.idle = self.idle or content.get("execution_state") == "idle"
        elif msg_type == "execute_input":
            self.execution_count = content.get("execution_count")
        else:
            self.collector.add(msg_type, content)

    def on_shell(self, msg: dict[str, Any]) -> None:
        if msg["parent_header"].get("msg_id") == self.msg_id and msg["msg_type"] == "execute_reply":
            self.reply = msg["content"]
            self.last_activity = time.monotonic()

    def finished(self, now: float) -> bool:
        """Done at the reply and the idle status; without idle (dropped when the kernel's output queue
        overflows), once the output has been quiet for a while since the reply."""
        if self.reply is None:
            return False
        return self.idle or now - self.last_activity >= _IDLE_GRACE_S


class Kernel:
    """One Jupyter kernel (ipykernel, started with the host's Python) that runs cells.

    Use ``async with Kernel(config) as kernel:`` or call `start` and `shutdown`. `execute` returns a
    `CellResult` for every cell, whatever the cell does; it raises only for misuse (not started, shut
    down). Cells run one at a time; concurrent `execute` calls wait their turn.
    """

    def __init__(self, config: KernelConfig | None = None) -> None:
        self.config = config or KernelConfig()
        self.generation = 0
        """Bumped every time the namespace is wiped (start, restart, reset): re-install what you defined."""
        self._km: AsyncKernelManager | None = None
        self._kc: AsyncKernelClient | None = None
        self._state_dir: Path | None = None
        self._workspace: Path | None = None
        self._owns_workspace = False
        self._lock = asyncio.Lock()
        self._guard = _ProcessGuard()
        weakref.finalize(self, self._guard.kill)
        self._abandoned = False
        self._wrapped = False
        """Whether the current process runs under bwrap (set at each launch)."""
        self._closed = False
        self._modules: set[str] = set()
        """Modules made by `kernel_module_code` in the current process."""
        self._reset_pending = False

    # -- life cycle ---------------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        """Whether the kernel process is running."""
        return self._guard.alive()

    @property
    def pid(self) -> int | None:
        """PID of the kernel's process (of bwrap when it runs under bwrap), or None when not running."""
        process = self._guard.process
        return process.pid if process is not None and process.poll() is None else None

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
        self._state_dir = Path(tempfile.mkdtemp(prefix="nbagent-kernel-"))
        if self.config.workspace is None:
            self._workspace = Path(tempfile.mkdtemp(prefix="nbagent-workspace-"))
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
            await self._stop_process()
            await self._launch()

    async def reset(self, *, lazy: bool = False) -> None:
        """Give the next user a clean kernel: clear the namespace, go back to the workspace, run the
        startup code again (an own temporary workspace is emptied too). A kernel that is dead or was
        left mid-cell is restarted instead. Modules stay imported and threads keep running: restart
        for full isolation.

        With `lazy` (and no startup code), the clearing waits for the next cell and travels in the same
        message when that cell is an internal one (``store_history=False``, like an agent's set-up):
        one kernel round trip less per reuse, but the old objects stay in memory until then.
        `generation` changes at once either way."""
        async with self._lock:
            self._require_started()
            if self._owns_workspace:
                _empty_directory(self.workspace)
            if lazy and not self.config.startup_code and not self._abandoned and self.alive:
                self._reset_pending = True
                self.generation += 1
                return
            self._reset_pending = False
            if await self._revive() is None:
                await self._run_setup(before=self._reset_code())

    def _reset_code(self) -> str:
        return _RESET_CODE.format(workspace=str(self.workspace))

    async def _pending_reset(self, *, merge: bool) -> str:
        """Run a lazy reset that is still due; with `merge`, return its code for the next cell instead."""
        if not self._reset_pending:
            return ""
        self._reset_pending = False
        code = f"{self._reset_code()}__import__({_BOOT_MODULE!r}).install()\n"
        if merge:
            return code
        await self._run_internal(code, "the namespace reset")
        return ""

    async def shutdown(self) -> None:
        """Stop the kernel and remove its temporary files. Safe to call twice, or while a cell runs
        (that cell ends as ``crashed``)."""
        self.kill()
        async with self._lock:
            await self._stop_process()
            self._remove_dirs()

    def kill(self) -> None:
        """Kill the kernel process now, without awaiting anything (for emergencies and signal handlers).
        The kernel counts as shut down; `shutdown` still removes its files."""
        self._closed = True
        self._guard.kill()

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
        try:
            await self._launch_process()
            await self._run_setup()
        except BaseException:
            await self._stop_process()
            raise

    async def _launch_process(self) -> None:
        assert self._state_dir is not None
        self._modules.clear()
        self._reset_pending = False
        assert self._workspace is not None
        state = self._state_dir
        plan = launch_plan(self.config, workspace=self._workspace, state_dir=state)
        self._wrapped = plan.wrapped
        spec = KernelSpec(
            argv=plan.argv, display_name="nbagent", language="python", interrupt_mode=plan.interrupt_mode
        )
        home = state / "home" if self.config.sandbox else Path.home()
        env = kernel_environment(self.config.env, home=home, state_dir=state)
        env.update(plan.env_overrides)
        for directory in (state / "ipython", state / "matplotlib", home):
            directory.mkdir(parents=True, exist_ok=True)
        km = AsyncKernelManager(
            kernel_spec_manager=_SingleSpec(spec),
            kernel_name="nbagent",
            transport="ipc",
            connection_file=str(state / "kernel.json"),
        )
        self._km = km
        with (state / "kernel.log").open("wb") as stderr:
            try:
                await km.start_kernel(
                    env=env,
                    cwd=str(self._workspace),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                )
            except OSError as exc:
                raise KernelError(f"could not launch the kernel process: {exc}") from exc
        self._guard.process = km.provisioner.process  # type: ignore[union-attr]
        kc = km.client()
        kc.start_channels()
        self._kc = kc
        try:
            await kc.wait_for_ready(timeout=self.config.start_timeout_s)
        except (RuntimeError, TimeoutError) as exc:
            raise KernelError(
                f"the kernel did not start ({exc}). Its log ends with:\n{self._log_tail() or '(empty)'}"
            ) from exc
        self._abandoned = False

    async def _run_setup(self, before: str = "") -> None:
        """nbagent's own set-up, after `before` in the same cell (one round trip), then the startup code."""
        boot = "" if _BOOT_MODULE in self._modules else kernel_module_code(_BOOT_MODULE, _boot_source())
        await self._run_internal(
            f"{before}{boot}__import__({_BOOT_MODULE!r}).install()\n", "nbagent's kernel setup"
        )
        self._modules.add(_BOOT_MODULE)
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

    async def _stop_process(self) -> None:
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

    def _remove_dirs(self) -> None:
        if self._state_dir is not None:
            shutil.rmtree(self._state_dir, ignore_errors=True)
        if self._owns_workspace and self._workspace is not None:
            shutil.rmtree(self._workspace, ignore_errors=True)

    def _log_tail(self) -> str:
        if self._state_dir is None:
            return ""
        try:
            with (self._state_dir / "kernel.log").open("rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - _LOG_TAIL_BYTES))
                text = f.read().decode("utf-8", errors="replace")
        except OSError:
            return ""
        lines = [line for line in text.splitlines() if line.strip()]
        return "\n".join(lines[-8:])

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
                result.note = _join_notes(revived, result.note)
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
        await self._stop_process()
        try:
            await self._launch()
        except KernelError as exc:
            raise KernelError(f"{before}, and restarting it failed: {exc}") from exc
        return f"{before}, so the kernel was restarted before this cell: earlier variables are gone."

    def _exit_code(self) -> int | None:
        process = self._guard.process
        return None if process is None else process.poll()

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
        kc = self._kc
        assert kc is not None
        started = time.monotonic()
        deadline = math.inf if limit_s is None else started + limit_s
        msg_id = kc.execute(
            prefix + code, store_history=store_history, allow_stdin=handler is not None, stop_on_error=False
        )
        run = _CellRun(msg_id, OutputCollector(self.config.max_output_chars), last_activity=started)
        iopub, shell, stdin = kc.iopub_channel.socket, kc.shell_channel.socket, kc.stdin_channel.socket
        # Plain (non-async) views of the same sockets, to read what is waiting without more polls.
        readers: dict[zmq.asyncio.Socket, zmq.Socket[bytes]] = {
            sock: zmq.Socket.shadow(sock.underlying) for sock in (iopub, shell, stdin)
        }
        poller = zmq.asyncio.Poller()
        poller.register(iopub, zmq.POLLIN)
        poller.register(shell, zmq.POLLIN)
        if handler is not None:
            poller.register(stdin, zmq.POLLIN)
        interrupted_at: float | None = None
        answers: set[asyncio.Task[None]] = set()
        self._abandoned = True
        try:
            while not run.finished(now := time.monotonic()):
                if interrupted_at is None and now >= deadline:
                    interrupted_at = now
                    await self._interrupt()
                    continue
                limit = deadline if interrupted_at is None else interrupted_at + self.config.grace_s
                if interrupted_at is not None and now >= limit:
                    return await self._recover(code, started, run, limit_s, died=False)
                wait_ms = max(1, math.ceil(1000 * min(_ALIVE_CHECK_S, limit - now)))
                try:
                    events = dict(await poller.poll(wait_ms))
                except zmq.ZMQError:
                    events = {}
                if not events:
                    if not self.alive:
                        timed_out = limit_s if interrupted_at is not None else None
                        return await self._recover(code, started, run, timed_out, died=True)
                    continue
                if iopub in events:
                    for msg in _drain(readers[iopub], kc.session):
                        run.on_iopub(msg)
                if shell in events:
                    for msg in _drain(readers[shell], kc.session):
                        run.on_shell(msg)
                if handler is None or stdin not in events:
                    continue
                for msg in _drain(readers[stdin], kc.session):
                    if msg["msg_type"] == "input_request":
                        task = asyncio.create_task(self._answer(kc, handler, msg["content"]))
                        answers.add(task)
                        task.add_done_callback(answers.discard)
        finally:
            for task in list(answers):
                task.cancel()
            if answers:  # let handlers record their cancellation; a sync tool in a thread cannot be stopped
                await asyncio.wait(list(answers), timeout=_ANSWER_CANCEL_WAIT_S)
        self._abandoned = False
        return self._finish(code, started, run, limit_s if interrupted_at is not None else None)

    def _finish(self, code: str, started: float, run: _CellRun, timed_out: float | None) -> CellResult:
        reply = run.reply
        assert reply is not None
        outputs = run.collector.outputs()
        status = CellStatus.OK if reply.get("status") == "ok" else CellStatus.ERROR
        note = None
        if status is CellStatus.ERROR and not any(isinstance(o, ErrorOutput) for o in outputs):
            ename = str(reply.get("ename", "Error"))
            if reply.get("status") == "aborted":
                ename, note = "ExecutionAborted", "The kernel aborted this cell without running it."
            outputs.append(
                ErrorOutput(
                    ename=ename,
                    evalue=str(reply.get("evalue", "")),
                    traceback=[str(line) for line in reply.get("traceback", [])],
                )
            )
        if timed_out is not None:
            status = CellStatus.TIMEOUT
            note = (
                f"The cell ran past its timeout of {timed_out:g} s and was interrupted; "
                "the kernel's variables are kept."
            )
        if not run.idle:
            note = _join_notes(
                note, "The kernel's output channel overflowed: some of this cell's output may be missing."
            )
        return CellResult(
            code=code,
            status=status,
            outputs=outputs,
            execution_count=reply.get("execution_count", run.execution_count),
            duration_s=time.monotonic() - started,
            note=_join_notes(note, run.collector.dropped_note()),
        )

    async def _recover(
        self, code: str, started: float, run: _CellRun, timed_out: float | None, *, died: bool
    ) -> CellResult:
        """End a cell whose kernel died, or would not stop after its timeout (`timed_out` seconds), and
        restart the kernel."""
        overran = f"The cell ran past its timeout of {timed_out:g} s" if timed_out is not None else ""
        last_words = self._log_tail() if died else ""
        if died:
            death = f"the kernel died ({self._death_cause()})"
            what = f"{overran}; after the interrupt, {death}" if overran else f"During this cell, {death}"
        else:
            what = f"{overran} and did not stop within {self.config.grace_s:g} s of an interrupt"
        await self._stop_process()
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
            note=_join_notes(note, run.collector.dropped_note()),
        )

    def _death_cause(self) -> str:
        return _describe_exit(self._exit_code(), self.config, wrapped=self._wrapped)

    async def _interrupt(self) -> None:
        assert self._km is not None
        try:
            await self._km.interrupt_kernel()
        except (OSError, RuntimeError, zmq.ZMQError) as exc:
            log.warning("interrupting the kernel failed: %s", exc)

    @staticmethod
    async def _answer(kc: AsyncKernelClient, handler: InputHandler, request: dict[str, Any]) -> None:
        try:
            value = await handler(str(request.get("prompt", "")), bool(request.get("password", False)))
        except Exception:
            log.exception("the input handler failed; the kernel gets EOFError")
            value = _EOF
        kc.input(value)


def _drain(socket: zmq.Socket[bytes], session: Session) -> list[dict[str, Any]]:
    """Every message waiting on `socket`, received without waiting (one poll per burst of output
    instead of one per message: the host's main cost per cell)."""
    messages: list[dict[str, Any]] = []
    while True:
        try:
            frames = socket.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return messages
        messages.append(_decode(frames, session))


def _decode(frames: list[bytes], session: Session) -> dict[str, Any]:
    """The parts of a Jupyter message this module reads, signature checked. Lighter than
    `Session.deserialize`, which also turns every date string of the headers into a datetime."""
    parts = cast(list[bytes], session.feed_identities(frames)[1])  # copied frames: bytes
    if len(parts) < 5:
        raise KernelError(f"malformed message from the kernel: {len(parts)} frames")
    if session.auth is not None and not hmac.compare_digest(parts[0], session.sign(parts[1:5])):
        raise KernelError("a message from the kernel has an invalid signature")
    header = session.unpack(parts[1])
    return {
        "header": header,
        "msg_type": header["msg_type"],
        "parent_header": session.unpack(parts[2]),
        "content": session.unpack(parts[4]),
    }


def _join_notes(*notes: str | None) -> str | None:
    return " ".join(note for note in notes if note) or None


def _empty_directory(path: Path) -> None:
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
