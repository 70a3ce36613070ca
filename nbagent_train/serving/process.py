"""The vLLM server as an operating-system process, beneath `PolicyServer`.

What is installed (vLLM, found without importing it; CUDA), a free port, launching the server in its own
session under a watchdog that stops it if the launching process dies first, stopping its process group
(SIGTERM, then SIGKILL), and the one log line that says why it died.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

# --------------------------------------------------------------------------------------------------
# Facts about the machine and the installed vLLM
# --------------------------------------------------------------------------------------------------


def vllm_source_dir() -> Path | None:
    """The installed vllm package folder (found without importing it), or None."""
    spec = importlib.util.find_spec("vllm")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def supports_logprobs_mode() -> bool:
    """Whether the installed vLLM has ``--logprobs-mode processed_logprobs`` (vLLM >= 0.10.2)."""
    source = vllm_source_dir()
    if source is None:
        return False
    for candidate in ("config/model.py", "engine/arg_utils.py", "config.py"):
        path = source / candidate
        if path.is_file() and "processed_logprobs" in path.read_text(errors="replace"):
            return True
    return False


def has_cuda() -> bool:
    """Whether torch is installed and sees a CUDA device."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------------------------------
# Launching and stopping
# --------------------------------------------------------------------------------------------------


# Runs the server as its child and stops the server's process group if this process's parent (the
# trainer) dies without stopping it (SIGKILL, a crash): the server starts its own session, so nothing
# else would. It ignores SIGTERM/SIGINT itself (a stop signals the whole group, the server included)
# and exits with the server's status.
_WATCHDOG = """\
import os, signal, subprocess, sys
parent, grace = int(sys.argv[1]), float(sys.argv[2])
server = subprocess.Popen(sys.argv[3:])
signal.signal(signal.SIGTERM, signal.SIG_IGN)
signal.signal(signal.SIGINT, signal.SIG_IGN)
while True:
    try:
        code = server.wait(timeout=1.0)
        sys.exit(code if code >= 0 else 128 - code)
    except subprocess.TimeoutExpired:
        if os.getppid() == parent:
            continue
    os.killpg(0, signal.SIGTERM)
    try:
        server.wait(timeout=grace)
    finally:
        os.killpg(0, signal.SIGKILL)
"""


def launch(
    command: Sequence[str], *, env: Mapping[str, str], log_path: Path, grace_s: float
) -> subprocess.Popen[bytes]:
    """Start `command` in a new session under the watchdog, its output appended to `log_path`.

    The log first gets the command line (``$ ...``); `grace_s` is how long the watchdog waits between
    SIGTERM and SIGKILL when it has to stop the server.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    watched = [sys.executable, "-I", "-S", "-c", _WATCHDOG, str(os.getpid()), str(grace_s), *command]
    with log_path.open("ab") as log:
        log.write(f"$ {' '.join(command)}\n".encode())
        log.flush()
        return subprocess.Popen(
            watched,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )


def terminate(process: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGTERM the process group, then SIGKILL it if it outlives `grace_s`."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


# --------------------------------------------------------------------------------------------------
# Reading the log
# --------------------------------------------------------------------------------------------------


_ERROR_LINE = re.compile(
    r"^(?:\(\w+ pid=\d+\)\s*)?(?:[A-Za-z_][\w.]*(?:Error|Exception)|[\w.]+: error): (?P<message>.*)$"
)
_LOG_LINE = re.compile(r"^(?:\(\w+ pid=\d+\)|INFO|WARNING|ERROR|DEBUG|\[)")
_GENERIC = ("Engine core initialization failed", "See root cause above", "Engine process failed to start")


def log_tail(path: Path | None, max_bytes: int = 200_000) -> str:
    """The last `max_bytes` of the log at `path`; empty when there is none."""
    if path is None or not path.exists():
        return ""
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - max_bytes))
        return f.read().decode(errors="replace")


def failure_reason(log_text: str) -> str | None:
    """The most telling error line of a vLLM log: the last exception (with its continuation lines)."""
    lines = log_text.splitlines()
    found: list[str] = []
    for index, line in enumerate(lines):
        if not _ERROR_LINE.match(line):
            continue
        message = [line.strip()]
        for follow in lines[index + 1 : index + 6]:
            if not follow.strip() or follow.startswith((" ", "\t")) or _LOG_LINE.match(follow):
                break
            message.append(follow.strip())
        found.append(" ".join(message))
    specific = [m for m in found if not any(g in m for g in _GENERIC)]
    candidates = specific or found
    if not candidates:
        return None
    chosen = re.sub(r"^\(\w+ pid=\d+\)\s*", "", candidates[-1])
    return chosen if len(chosen) <= 400 else chosen[:400] + "..."
