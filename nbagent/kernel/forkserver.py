"""The template of forked kernels: ipykernel imported once, then one kernel forked per request.

The host runs this file with its own Python inside bubblewrap (``python -P forkserver.py SETTINGS``),
where it imports only the standard library, ipykernel and nbagent's kernel-side module, freezes the
garbage collector (so that children leave the shared pages alone) and waits. Every kernel is a fork of
it: the imported modules' memory stays shared copy-on-write and a kernel is ready in milliseconds.

Each fork isolates itself before any kernel code runs: new user, mount, PID, IPC and UTS namespaces
(and network, in the sandbox), a private ``/tmp`` and ``/dev/shm``, the other kernels' folders hidden,
its own ``/proc`` as PID 1 of its namespace, then no capabilities and no new privileges. Kernels
never see each other, and a kernel that ends leaves nothing for the next one.

One JSON object per line. From the host on stdin: ``{"spawn": ID, "connection_file", "state_dir",
"workspace", "env"}`` and ``{"kill": PID}``. To the host on stdout: ``{"ready": true}`` once,
``{"spawned": ID, "pid": PID}`` or ``{"spawned": ID, "error": TEXT}``, and ``{"exited": PID,
"returncode": CODE}`` (negative: killed by that signal). SETTINGS (JSON): ``limits`` (resource limit
name to value), ``network`` (keep the template's network), ``hide`` (folders whose other kernels'
contents are hidden), ``keep`` (folders of the host's Python to show through those covers),
``kernel_app`` (the file of the kernel application, `nbagent.kernel.lean_kernel`), ``boot`` and
``boot_name`` (the kernel-side module to preload, and its name),
``preload`` (more modules to import), ``modules`` (kernel code that loads the host's kernel-side
modules, from `nbagent.kernel.boot.kernel_module_code`) and ``kernel_flags`` (ipykernel's options).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib.util
import json
import os
import resource
import select
import signal
import sys
import threading
import traceback
from typing import Any

_CLONE_NEWNS = 0x00020000
_CLONE_NEWUTS = 0x04000000
_CLONE_NEWIPC = 0x08000000
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWPID = 0x20000000
_CLONE_NEWNET = 0x40000000
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 2, 4, 8
_MS_REC, _MS_PRIVATE = 16384, 1 << 18
_PR_CAPBSET_DROP, _PR_SET_NO_NEW_PRIVS = 24, 38
_PR_SET_CHILD_SUBREAPER, _PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL = 36, 47, 4
_CAPABILITY_VERSION_3 = 0x20080522
_M_ARENA_MAX = -8
_SYS_OPEN_TREE, _SYS_MOVE_MOUNT = 428, 429  # the same number on every architecture (Linux 5.2+)
_AT_FDCWD, _AT_RECURSIVE, _OPEN_TREE_CLONE, _MOVE_MOUNT_F_EMPTY_PATH = -100, 0x8000, 1, 4

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(
        _libc.mount(
            source.encode(), target.encode(), fstype.encode() if fstype else None, flags,
            data.encode() if data else None,
        ),
        f"mounting {target}",
    )  # fmt: skip


def _send(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def _detached_copy(path: str) -> int:
    """A mount file descriptor holding a copy of the folder `path` (survives covering it)."""
    fd = _libc.syscall(_SYS_OPEN_TREE, _AT_FDCWD, path.encode(), _OPEN_TREE_CLONE | _AT_RECURSIVE)
    if fd < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"copying the mount of {path}: {os.strerror(errno)}")
    return int(fd)


def _attach(fd: int, path: str) -> None:
    _check(
        _libc.syscall(_SYS_MOVE_MOUNT, fd, b"", _AT_FDCWD, path.encode(), _MOVE_MOUNT_F_EMPTY_PATH),
        f"mounting {path}",
    )
    os.close(fd)


def _isolate(request: dict[str, Any], settings: dict[str, Any]) -> None:
    """In the first child: enter new namespaces and lay out the kernel's file system."""
    own = [os.path.realpath(request["state_dir"]), os.path.realpath(request["workspace"])]
    uid, gid = os.getuid(), os.getgid()
    flags = _CLONE_NEWUSER | _CLONE_NEWNS | _CLONE_NEWPID | _CLONE_NEWIPC | _CLONE_NEWUTS
    if not settings["network"]:
        flags |= _CLONE_NEWNET
    _check(_libc.unshare(flags), "unshare")
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)
    _mount("none", "/", None, _MS_REC | _MS_PRIVATE)
    covered = ["/tmp", "/dev/shm"] if settings["sandbox"] else []
    for folder in settings["hide"]:
        if os.path.isdir(folder) and not any(folder.startswith(top + "/") for top in covered):
            covered.append(folder)
    # Its own folders, and the host's Python where it lives under /tmp, come back over the covers.
    shown = own + [path for path in settings["keep"] if path not in own]
    hidden = [path for path in shown if any(path == top or path.startswith(top + "/") for top in covered)]
    copies = [_detached_copy(path) for path in hidden]
    for folder in covered:
        mode = "1777" if folder in ("/tmp", "/dev/shm") else "0755"
        _mount("tmpfs", folder, "tmpfs", _MS_NOSUID | _MS_NODEV, f"mode={mode}")
    for path, fd in zip(hidden, copies, strict=True):
        os.makedirs(path, exist_ok=True)
        _attach(fd, path)


def _drop_privileges() -> None:
    for cap in range(64):
        if _libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            break  # past the last capability this kernel knows
    _libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = (ctypes.c_uint32 * 2)(_CAPABILITY_VERSION_3, 0)
    _check(_libc.capset(header, (ctypes.c_uint32 * 6)()), "dropping capabilities")
    _check(_libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "setting no_new_privs")


def _tell(report: int, exc: BaseException) -> None:
    with contextlib.suppress(OSError):
        where = traceback.extract_tb(exc.__traceback__)[-1]
        os.write(report, f"error:{type(exc).__name__}: {exc} (forkserver line {where.lineno})\n".encode())


def _kernel_main(request: dict[str, Any], settings: dict[str, Any], report: int) -> int:
    """In the kernel process (PID 1 of its namespace): finish the set-up, then serve until the end."""
    try:
        _mount("proc", "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
        _drop_privileges()
        for name, limit in settings["limits"].items():
            resource.setrlimit(getattr(resource, name), (limit, limit))
        log = os.open(os.path.join(request["state_dir"], "kernel.log"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)
        os.dup2(log, 2)
        os.environ.clear()
        os.environ.update(request["env"])
        extra_path = request["env"].get("PYTHONPATH")
        if extra_path:
            sys.path[1:1] = extra_path.split(os.pathsep)
        os.chdir(request["workspace"])
    except BaseException as exc:
        _tell(report, exc)
        return 70
    os.closerange(3, 65536)  # the report pipe too: the host hears that the kernel is up
    sys.stdin = open(0)  # noqa: SIM115 (the process's own streams, for its lifetime)
    sys.stdout = open(1, "w")  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1)  # noqa: SIM115
    try:
        sys.argv = ["lean_kernel", "-f", request["connection_file"], *settings["kernel_flags"]]
        app = sys.modules[_KERNEL_APP].LeanKernelApp.instance()  # options parsed by `_preload`
        app.connection_file = request["connection_file"]
        app.initialize()
        app.start()
    except BaseException:
        traceback.print_exc()
        return 1
    return 0


def _fork_kernel(request: dict[str, Any], settings: dict[str, Any]) -> None:
    """Fork a kernel for `request`; report its PID (or why it failed) once it is set up."""
    read_end, write_end = os.pipe()
    first = os.fork()
    if first == 0:
        code = 70
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            os.close(read_end)
            _isolate(request, settings)
            kernel = os.fork()  # the first process of the new PID namespace
            if kernel == 0:
                code = _kernel_main(request, settings, write_end)
            else:
                os.write(write_end, f"pid:{kernel}\n".encode())
                code = 0
        except BaseException as exc:
            _tell(write_end, exc)
        finally:
            os._exit(code)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 4096):  # until the kernel closes its copy, ready to serve
        chunks.append(chunk)
    os.close(read_end)
    os.waitpid(first, 0)
    lines = b"".join(chunks).decode(errors="replace").splitlines()
    pid = next((int(line[4:]) for line in lines if line.startswith("pid:")), None)
    errors = [line[6:] for line in lines if line.startswith("error:")]
    if pid is not None and not errors:
        _send({"spawned": request["spawn"], "pid": pid})
        return
    _send({"spawned": request["spawn"], "error": errors[0] if errors else "the fork ended silently"})


def _reap() -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _send({"exited": pid, "returncode": os.waitstatus_to_exitcode(status)})


_KERNEL_MODULES = (
    "ipykernel.kernelapp",
    "ipykernel.ipkernel",
    "ipykernel.zmqshell",
    "ipykernel.debugger",
    "IPython.core.completerlib",
    "IPython.core.debugger",
    "IPython.core.logger",
    "IPython.core.oinspect",
    "IPython.extensions.storemagic",
    "IPython.utils.wildcard",
    "tornado.gen",
    "tornado.locks",
    "tornado.queues",
    "tornado.platform.asyncio",
)
"""What a kernel imports while it starts (measured: the modules a fresh kernel has that these lack are
only encodings and one-off helpers)."""


_KERNEL_APP = "_nbagent_lean_kernel"
"""The name the kernel application's module (``settings["kernel_app"]``) is loaded under."""


def _load_file(name: str, path: str) -> None:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


def _preload(settings: dict[str, Any]) -> None:
    # Without debugpy (a sixth of a kernel's modules, there for Jupyter's debug requests, which nbagent
    # never sends) every fork copies about 1.5 MiB less of the template's memory. ipykernel decides
    # once, on import, that there is no debugger; a cell can still import debugpy.
    sys.modules["debugpy"] = None  # type: ignore[assignment]
    for name in _KERNEL_MODULES:
        importlib.import_module(name)
    del sys.modules["debugpy"]
    _load_file(_KERNEL_APP, settings["kernel_app"])
    sys.modules[_KERNEL_APP].LeanKernelApp.prepare(settings["kernel_flags"])
    _load_file(settings["boot_name"], settings["boot"])
    for code in settings["modules"]:
        exec(code, {})  # the host's kernel-side modules, as `Kernel.ensure_module` sends them
    for name in settings["preload"]:
        importlib.import_module(name)


def main() -> None:
    settings = json.loads(sys.argv[1])
    _check(_libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), "becoming a subreaper")
    _libc.mallopt(_M_ARENA_MAX, 1)  # a kernel's dozen threads would each get an arena of their own
    _preload(settings)
    if threading.active_count() != 1:
        raise RuntimeError("the template started threads while importing; it cannot fork safely")
    gc.collect()
    gc.freeze()
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    _send({"ready": True})
    stdin = sys.stdin.buffer
    pending = b""
    while True:
        ready, _, _ = select.select([stdin.fileno(), wake_read], [], [])
        if wake_read in ready:
            os.read(wake_read, 4096)
            _reap()
        if stdin.fileno() not in ready:
            continue
        data = os.read(stdin.fileno(), 65536)
        if not data:
            return  # the host closed the pipe: the sandbox ends, and every kernel with it
        pending += data
        *lines, pending = pending.split(b"\n")
        for line in lines:
            request = json.loads(line)
            if "kill" in request:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(request["kill"]), signal.SIGKILL)
            else:
                _fork_kernel(request, settings)
        _reap()


if __name__ == "__main__":
    main()
