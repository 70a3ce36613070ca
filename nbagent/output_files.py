"""Output paths: checked before any work starts, and locked against a second writer.

`check_output_file` and `check_output_folder` raise `OutputPathError` for a path that cannot be written
(a folder where a file goes, a file where a folder goes, a regular file among its parents, a folder
without write permission), so a command refuses it up front instead of failing when it saves.

`OutputLock` holds an exclusive ``flock`` on ``<output>.lock`` beside the output, with the holder's pid
in it; a second process that asks for the same output gets `OutputLockedError` naming the holder. The
kernel releases the lock when the holder's process ends, however it ends (SIGKILL included); a clean
release also removes the file. Within the holding process the lock is re-entrant, so a command can
lock its output before it loads anything and then call `nbagent.rollout.collect`, which locks it too.
"""

from __future__ import annotations

import fcntl
import os
import threading
from contextlib import suppress
from pathlib import Path

from nbagent.errors import OutputLockedError, OutputPathError

__all__ = ["OutputLock", "OutputLockedError", "OutputPathError", "check_output_file", "check_output_folder"]


def _check_parents(path: Path, what: str) -> None:
    """The nearest existing parent of `path` must be a writable folder (the rest is created)."""
    for parent in path.absolute().parents:
        if not parent.exists():
            continue
        if not parent.is_dir():
            raise OutputPathError(
                f"cannot write {what} to {path}: {parent} is a file, not a folder; choose another path."
            )
        if not os.access(parent, os.W_OK | os.X_OK):
            raise OutputPathError(f"cannot write {what} to {path}: {parent} is not writable.")
        return


def check_output_file(path: str | Path, what: str) -> Path:
    """`path` as a `Path` if a file can be written there; else `OutputPathError` naming `what`
    (e.g. ``"the notebook"``), the path and the reason. Missing parent folders are fine."""
    p = Path(path)
    if p.is_dir():
        raise OutputPathError(f"cannot write {what} to {p}: it is a folder; give a file path.")
    if p.exists():
        if not os.access(p, os.W_OK):
            raise OutputPathError(f"cannot write {what} to {p}: the file is not writable.")
    else:
        _check_parents(p, what)
    return p


def check_output_folder(path: str | Path, what: str) -> Path:
    """`path` as a `Path` if it is, or can be made, a writable folder; else `OutputPathError`."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OutputPathError(f"cannot write {what} to {p}: it is a file, not a folder; choose another path.")
    if p.is_dir():
        if not os.access(p, os.W_OK | os.X_OK):
            raise OutputPathError(f"cannot write {what} to {p}: the folder is not writable.")
    else:
        _check_parents(p, what)
    return p


def _holder(fd: int) -> str:
    """``process 123 (its command line)`` from the pid a lock file holds, as far as it can be read."""
    try:
        pid = int(os.pread(fd, 32, 0).decode().strip())
    except (OSError, ValueError, UnicodeDecodeError):
        return "another process"
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return f"process {pid}"
    command = " ".join(command.replace("\0", " ").split())  # one line, whatever its arguments hold
    return f"process {pid} ({command[:77] + '...' if len(command) > 80 else command})"


_HELD: dict[Path, tuple[int, int]] = {}
"""Lock files this process holds: their descriptor and how many holders share it."""
_GUARD = threading.Lock()


class OutputLock:
    """An exclusive lock on an output file or folder, for as long as this process holds it.

    Use ``with OutputLock(path): ...``, or `acquire` and `release`. See the module docstring.
    """

    def __init__(self, output: str | Path) -> None:
        self.output = Path(output)
        resolved = self.output.resolve()
        self.path = resolved.with_name(resolved.name + ".lock")
        """The lock file, beside the output."""
        self._acquired = False

    def acquire(self) -> OutputLock:
        """Take the lock; `OutputLockedError` naming the holder if another process holds it."""
        with _GUARD:
            if not self._acquired:
                fd, holders = _HELD.get(self.path) or (self._lock(), 0)
                _HELD[self.path] = (fd, holders + 1)
                self._acquired = True
        return self

    def _lock(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                os.close(fd)
                raise OutputLockedError(
                    f"{self.output} is being written by {holder}; wait for it to end or stop it, "
                    "or choose another output path."
                ) from None
            except BaseException:
                os.close(fd)
                raise
            if self._still_in_place(fd):
                break
            os.close(fd)  # its holder removed it between our open and our lock: lock the new one
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd

    def _still_in_place(self, fd: int) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def release(self) -> None:
        """Give the lock up; the last holder in this process removes the lock file."""
        with _GUARD:
            if not self._acquired:
                return
            self._acquired = False
            fd, holders = _HELD.pop(self.path)
            if holders > 1:
                _HELD[self.path] = (fd, holders - 1)
                return
            with suppress(FileNotFoundError):
                self.path.unlink()
            os.close(fd)  # closing the descriptor releases the flock

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
