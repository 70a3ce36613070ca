"""What kernel code can reach of the host, tried the way hostile code would, on real bwrap kernels.

The secrets are the host's: its starting environment and command line (`/proc/<pid>/environ` and
`cmdline` of any process of the same user), its loopback services, its root file system.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import socket
import subprocess
import sys
import textwrap
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from nbagent.errors import ConfigError, UnprotectedKernelWarning
from nbagent.kernel import Kernel, KernelConfig, launch
from nbagent.trajectory import CellResult, CellStatus, ExecuteResult

pytestmark = pytest.mark.skipif(launch.bwrap_unusable() is not None, reason=str(launch.bwrap_unusable()))

# Everything a process of the kernel's user could read of other processes' environments: every /proc
# entry and the parent's. Prints one JSON object: what it read and which attacks the kernel allowed.
_READ = textwrap.dedent(
    """\
    import json, os
    texts = []
    for root in ROOTS:
        for pid in [p for p in os.listdir(root) if p.isdigit()] + [str(os.getppid())]:
            for name in ("environ", "cmdline"):
                try:
                    with open(f"{root}/{pid}/{name}", "rb") as file:
                        texts.append(file.read().decode(errors="replace"))
                except OSError:
                    pass
    print(json.dumps({"allowed": attacks, "texts": texts}))
    """
)
# What root could try first inside an isolated kernel: unmount /proc (revealing the host's beneath) and
# mount a fresh proc elsewhere. Never in an unisolated kernel, where it would unmount the host's /proc:
# it stops unless the kernel is in a PID namespace of its own.
_ATTACK = textwrap.dedent(
    """\
    import ctypes, os
    if os.readlink("/proc/self/ns/pid") == HOST_PID_NAMESPACE:
        raise RuntimeError("the kernel shares the host's PID namespace: not attacking the host")
    libc = ctypes.CDLL(None, use_errno=True)
    attacks = []
    if libc.umount2(b"/proc", 2) == 0:  # MNT_DETACH
        attacks.append("umount /proc")
    os.makedirs("procprobe", exist_ok=True)
    if libc.mount(b"proc", b"procprobe", b"proc", 0, None) == 0:
        attacks.append("mount proc")
    ROOTS = ("/proc", "procprobe")
    """
)
_NO_ATTACK = 'attacks = []\nROOTS = ("/proc",)\n'

_HOST = textwrap.dedent(
    """\
    import asyncio, json, os, sys
    from nbagent.kernel import KernelConfig, KernelPool

    async def main() -> None:
        namespace = f"HOST_PID_NAMESPACE = {os.readlink('/proc/self/ns/pid')!r}\\n"
        config = json.loads(sys.argv[1])
        start = config.pop("start", "launch")
        async with KernelPool(1, KernelConfig(**config), start=start) as pool, pool.lease() as kernel:
            result = await kernel.execute(namespace + sys.stdin.read(), timeout=60)
        assert result.ok, result
        print(result.outputs[0].text)

    asyncio.run(main())
    """
)


def _scan_from_a_host(
    tmp_path: Path, config: dict[str, object], *, attack: bool
) -> tuple[str, dict[str, list[str]]]:
    """Start a host process holding a fresh secret in its environment and on its command line; its
    kernel runs the scan (after the attacks, with `attack`). Returns the secret and what it reported."""
    secret = f"sk-nbagent-{uuid.uuid4().hex}"
    host = tmp_path / "host.py"
    host.write_text(_HOST)
    done = subprocess.run(
        [sys.executable, str(host), json.dumps(config), f"--api-key={secret}"],
        input=(_ATTACK if attack else _NO_ATTACK) + _READ,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NBAGENT_PROBE_API_KEY": secret},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return secret, json.loads(done.stdout)


@pytest.mark.parametrize(
    "config",
    [{}, {"sandbox": True}, {"start": "fork"}, {"sandbox": True, "start": "fork"}],
    ids=["default (private processes)", "sandbox", "forked", "forked in the sandbox"],
)
def test_kernel_code_cannot_read_the_host_environment_or_command_line(
    tmp_path: Path, config: dict[str, object]
) -> None:
    secret, report = _scan_from_a_host(tmp_path, config, attack=True)
    assert report["texts"], "the scan read nothing at all: it cannot tell anything"
    assert not any(secret in text for text in report["texts"])
    assert report["allowed"] == []


def test_without_private_processes_the_same_scan_finds_the_secret(tmp_path: Path) -> None:
    """The exposure the default closes (and the proof that the scan above can fail)."""
    secret, report = _scan_from_a_host(tmp_path, {"private_processes": False}, attack=False)
    assert any(secret in text for text in report["texts"])


async def test_sandboxed_root_cannot_remount_the_system_writable() -> None:
    probe = anyio.Path(f"/etc/nbagent-remount-probe-{uuid.uuid4().hex[:12]}")
    code = textwrap.dedent(
        f"""\
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        MS_REMOUNT, MS_BIND = 32, 4096
        remounted = libc.mount(None, b"/", None, MS_REMOUNT | MS_BIND, None) == 0
        try:
            open({str(probe)!r}, "w").close()
            wrote = True
        except OSError:
            wrote = False
        (remounted, wrote)
        """
    )
    try:
        async with Kernel(KernelConfig(sandbox=True)) as kernel:
            result = await kernel.execute(code, timeout=30)
        assert _value(result) == (False, False)
        assert not await probe.exists()
    finally:
        with contextlib.suppress(OSError):
            await probe.unlink()


@pytest.fixture
def services() -> Iterator[list[str]]:
    """Listening services of the host that a sandbox must not reach; yields kernel code that connects
    to each (loopback TCP over IPv4 and IPv6, an abstract and a file-system Unix socket)."""
    opened: list[socket.socket] = []
    attempts: list[str] = []

    def listen(family: int, address: object) -> socket.socket:
        server = socket.socket(family, socket.SOCK_STREAM)
        server.bind(address)
        server.listen()
        opened.append(server)
        return server

    for host in ("127.0.0.1", "127.0.0.2"):
        port = listen(socket.AF_INET, (host, 0)).getsockname()[1]
        attempts.append(f"socket.create_connection(({host!r}, {port}), timeout=5)")
    if socket.has_ipv6:
        try:
            port = listen(socket.AF_INET6, ("::1", 0)).getsockname()[1]
            attempts.append(f"socket.create_connection(('::1', {port}), timeout=5)")
        except OSError:
            pass  # no IPv6 loopback on this machine
    abstract = f"\0nbagent-{uuid.uuid4().hex}"
    listen(socket.AF_UNIX, abstract)
    attempts.append(f"socket.socket(socket.AF_UNIX).connect({abstract!r})")
    run_dir = Path("/run")
    path: Path | None = None
    if os.access(run_dir, os.W_OK):
        path = run_dir / f"nbagent-{uuid.uuid4().hex[:12]}.sock"
        listen(socket.AF_UNIX, str(path))
        attempts.append(f"socket.socket(socket.AF_UNIX).connect({str(path)!r})")
    try:
        yield attempts
    finally:
        for server in opened:
            server.close()
        if path is not None:
            path.unlink(missing_ok=True)


def _value(result: CellResult) -> object:
    assert isinstance(result.outputs[-1], ExecuteResult), result
    return ast.literal_eval(result.outputs[-1].data["text/plain"])


def _reached(attempts: list[str]) -> str:
    body = "\n".join(
        f"try:\n    {attempt}\n    reached.append({attempt!r})\nexcept OSError:\n    pass"
        for attempt in attempts
    )
    return f"import socket\nreached = []\n{body}\nreached"


async def test_sandbox_has_no_network_unless_allowed(services: list[str]) -> None:
    assert len(services) >= 3
    async with Kernel(KernelConfig(sandbox=True)) as kernel:
        blocked = await kernel.execute(_reached(services), timeout=60)
    assert _value(blocked) == []
    tcp = [attempt for attempt in services if "create_connection" in attempt]
    async with Kernel(KernelConfig(sandbox=True, allow_network=True)) as kernel:
        allowed = await kernel.execute(_reached(tcp), timeout=60)
    assert _value(allowed) == tcp


async def test_without_bwrap_kernels_start_unprotected_with_one_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(launch, "bwrap_executable", lambda: "/nonexistent/bwrap")
    launch.bwrap_unusable.cache_clear()
    launch._warn_unprotected.cache_clear()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(2):
                async with Kernel() as kernel:
                    pid = await kernel.execute("import os\nos.getpid()")
                    assert pid.status is CellStatus.OK
                    assert int(pid.outputs[0].data["text/plain"]) == kernel.pid  # type: ignore[union-attr]
        messages = [str(w.message) for w in caught if issubclass(w.category, UnprotectedKernelWarning)]
        assert len(messages) == 1
        assert "/proc/<pid>/environ" in messages[0]
        assert "pip install 'nbagent[sandbox]'" in messages[0]
        with pytest.raises(ConfigError, match="private_processes=True"):
            async with Kernel(KernelConfig(private_processes=True)):
                pass
    finally:
        launch.bwrap_unusable.cache_clear()
        launch._warn_unprotected.cache_clear()
