"""Run a collection's episodes in local worker processes, each with its own event loop and kernel pool.

One Python process serves every episode's HTTP calls, kernel messages and records on one core; past a
few hundred episodes in flight that core is the limit. ``collect(workers=N)`` splits the episodes over
N processes started here (``multiprocessing``'s spawn: a fresh interpreter that imports the factories
`collect` was given, ``__main__``'s included), results streaming back over a pipe to the one writer in
this process. Jobs are spread by `nbagent.rollout.dispatch`; a worker that dies is started again (twice
at most) and its episodes run again. A worker dies with this process, its kernels with it (Linux
parent-death signal), so a ``kill -9`` of the collector leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import ctypes
import itertools
import multiprocessing
import queue
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import anyio
import anyio.to_thread
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectSendStream

from nbagent.rollout.dispatch import (
    EpisodeWorker,
    WorkerLost,
    dispatch,
    per_worker_settings,
    share_out,
)
from nbagent.rollout.episode import AgentSource, EnvironmentSource, EpisodeSettings, resolve_environment
from nbagent.rollout.plan import EpisodeJob, RolloutError
from nbagent.trajectory import Trajectory

__all__ = ["WORKER_RESTARTS", "run_in_processes"]

WORKER_RESTARTS = 2
"""Times a worker process that died is started again before its share of the work goes elsewhere."""


@dataclass(frozen=True)
class _Setup:
    env: EnvironmentSource
    agent: AgentSource
    kernels: int
    settings: EpisodeSettings


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


def _worker_main(conn: Connection, setup: _Setup) -> None:
    """A worker process: build the agent, start the pool, then run every job it is sent."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the collector decides when to stop
    anyio.run(_serve, conn, setup)


async def _serve(conn: Connection, setup: _Setup) -> None:
    channel = _Channel(conn)
    try:
        worker = EpisodeWorker(setup.env, setup.agent, setup.kernels, setup.settings)
        await worker.ready()
    except Exception as exc:
        channel.send(("failed", f"{type(exc).__name__}: {exc}"))
        await channel.drain()
        return
    channel.send(("ready", None))

    async def run(job_id: int, job: EpisodeJob) -> None:
        channel.send(("result", (job_id, await worker.run(job))))

    try:
        async with anyio.create_task_group() as tg:
            while (message := await channel.receive()) not in (None, _STOP):
                tg.start_soon(run, *message)
            tg.cancel_scope.cancel()  # stopped with episodes in flight: the collection was abandoned
    finally:
        await worker.close()
        await channel.drain()


_STOP = "stop"
_CLOSE = object()


class _Channel:
    """One end of a pipe, served by two threads so that neither side's event loop ever waits on it (a
    loop blocked writing to a full pipe cannot read the other way: both sides would stall): one reads
    every message as it arrives, one writes what `send` queues."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._loop = asyncio.get_running_loop()
        self._inbox: asyncio.Queue[Any] = asyncio.Queue()
        self._outbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._written = threading.Event()
        threading.Thread(target=self._read, name="nbagent-pipe-reader", daemon=True).start()
        threading.Thread(target=self._write, name="nbagent-pipe-writer", daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                message = self._conn.recv()
            except (EOFError, OSError):
                message = None
            try:
                self._loop.call_soon_threadsafe(self._inbox.put_nowait, message)
            except RuntimeError:  # the loop is closed: nobody listens any more
                return
            if message is None:
                return

    def _write(self) -> None:
        try:
            while (message := self._outbox.get()) is not _CLOSE:
                self._conn.send(message)
        except OSError:  # the other end is gone; its reader sees that too
            pass
        finally:
            self._written.set()

    def send(self, message: Any) -> None:
        """Queue `message` for the other end (never blocks)."""
        self._outbox.put(message)

    async def receive(self) -> Any:
        """The next message, or None once the other end is gone."""
        return await self._inbox.get()

    async def drain(self) -> None:
        """Write what is queued, then stop writing."""
        self._outbox.put(_CLOSE)
        await anyio.to_thread.run_sync(self._written.wait)

    def close(self) -> None:
        self._outbox.put(_CLOSE)
        self._conn.close()


class _ProcessRunner:
    """One worker process as the dispatcher sees it, started again when it dies."""

    def __init__(self, index: int, setup: _Setup, readers: TaskGroup) -> None:
        self.index = index
        self.setup = setup
        self.restarts = WORKER_RESTARTS
        self._readers = readers
        self._context = multiprocessing.get_context("spawn")
        self._process: BaseProcess | None = None
        self._channel: _Channel | None = None
        self._pending: dict[int, tuple[anyio.Event, list[Trajectory]]] = {}
        self._ids = itertools.count()
        self._lock = anyio.Lock()

    async def start(self) -> None:
        """Start the process and wait until its kernel pool is up; `RolloutError` when it fails."""
        ours, theirs = self._context.Pipe()
        process = self._context.Process(
            target=_worker_main, args=(theirs, self.setup), name=f"nbagent-worker-{self.index}"
        )
        try:
            process.start()
        except Exception as exc:  # the set-up does not pickle
            raise RolloutError(
                f"worker process {self.index} could not start: {type(exc).__name__}: {exc} (the "
                "environment and the agent factory must pickle: module-level functions, or "
                "functools.partial of them)"
            ) from exc
        finally:
            theirs.close()
        self._process = process
        channel = _Channel(ours)
        message = await channel.receive()
        if message is None or message[0] != "ready":
            await self._reap()
            channel.close()
            why = message[1] if message else f"it exited with code {process.exitcode}"
            raise RolloutError(f"worker process {self.index} could not start: {why}")
        self._channel = channel
        self._readers.start_soon(self._read, channel)

    async def _read(self, channel: _Channel) -> None:
        """Hand each result to the episode waiting for it; when the process dies, fail them all."""
        while (message := await channel.receive()) is not None:
            job_id, traj = message[1]
            event, box = self._pending.pop(job_id)
            box.append(traj)
            event.set()
        if self._channel is channel:
            self._channel = None
        channel.close()
        lost, self._pending = self._pending, {}
        for event, _ in lost.values():
            event.set()

    async def run(self, job: EpisodeJob) -> Trajectory:
        channel = self._channel
        if channel is None:
            raise WorkerLost(f"worker process {self.index} is not running")
        job_id, event, box = next(self._ids), anyio.Event(), list[Trajectory]()
        self._pending[job_id] = (event, box)
        channel.send((job_id, job))
        await event.wait()
        if not box:
            code = self._process.exitcode if self._process is not None else None
            raise WorkerLost(f"worker process {self.index} died (exit code {code})")
        return box[0]

    async def revive(self) -> bool:
        async with self._lock:
            if self._channel is not None:
                return True  # another episode's revive did it
            await self._reap()
            while self.restarts > 0:
                self.restarts -= 1
                try:
                    await self.start()
                except RolloutError:
                    continue
                return True
            return False

    async def stop(self) -> None:
        """Ask the worker to close its pool and exit, then make sure it is gone."""
        if self._channel is not None:
            self._channel.send(_STOP)
        await self._reap()

    async def _reap(self, wait_s: float = 60.0) -> None:
        process = self._process
        if process is None:
            return
        await anyio.to_thread.run_sync(process.join, wait_s)
        if process.is_alive():
            process.kill()
        await anyio.to_thread.run_sync(process.join)
        self._process = None


async def run_in_processes(
    env: EnvironmentSource,
    agent: AgentSource,
    jobs: Sequence[EpisodeJob],
    concurrency: int,
    settings: EpisodeSettings,
    results: MemoryObjectSendStream[Trajectory],
    *,
    workers: int,
) -> None:
    """Run `jobs` in `workers` local processes, `concurrency` episodes in flight in all, sending each
    trajectory to `results` (this process's writer)."""
    env_name = resolve_environment(env).name
    workers, per_worker, kernels = share_out(concurrency, len(jobs), workers)
    setup = _Setup(env, agent, kernels, per_worker_settings(settings, workers))
    failures: list[RolloutError] = []

    async def start(runner: _ProcessRunner) -> None:
        try:
            await runner.start()
        except RolloutError as exc:
            failures.append(exc)

    async with anyio.create_task_group() as readers:
        runners = [_ProcessRunner(index, setup, readers) for index in range(workers)]
        try:
            async with anyio.create_task_group() as starting:
                for runner in runners:
                    starting.start_soon(start, runner)
            if failures:
                raise failures[0]
            await dispatch(runners, per_worker, jobs, settings, env_name, results)
        finally:
            with anyio.CancelScope(shield=True):
                for runner in runners:
                    await runner.stop()
