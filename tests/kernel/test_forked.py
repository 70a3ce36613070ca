"""Kernels forked from a template (`KernelPool(start="fork")`) on real bwrap kernels: what one episode
leaves is invisible to the next and to its neighbours, crashes and a dead template are recovered from,
and the limits still hold."""

from __future__ import annotations

import ast
import ctypes
import os
import signal
import textwrap
from pathlib import Path
from typing import Any

import pytest

from nbagent.errors import ConfigError
from nbagent.kernel import KernelConfig, KernelPool, launch
from nbagent.kernel.forked import ForkServer
from nbagent.trajectory import CellResult, CellStatus, ErrorOutput, ExecuteResult, StreamOutput

pytestmark = pytest.mark.skipif(launch.bwrap_unusable() is not None, reason=str(launch.bwrap_unusable()))


def _value(result: CellResult) -> Any:
    assert result.ok, result
    output = result.outputs[-1]
    assert isinstance(output, ExecuteResult), result
    return ast.literal_eval(output.data["text/plain"])


_LEAVE_TRACES = textwrap.dedent(
    """\
    import json, os, colorsys
    secret = "episode-1"
    colorsys.rgb_to_hls = lambda *a: "poisoned"
    open("left.txt", "w").write("x")
    open("/tmp/left.txt", "w").write("x")
    """
)
_LOOK_FOR_TRACES = textwrap.dedent(
    """\
    import os, sys
    (
        "secret" in globals(),
        "colorsys" in sys.modules,
        os.listdir("."),
        os.path.exists("/tmp/left.txt"),
    )
    """
)


async def test_a_fresh_fork_per_lease_leaves_nothing_of_the_last_episode() -> None:
    async with KernelPool(1, KernelConfig(sandbox=True), reset="restart", start="fork") as pool:
        async with pool.lease() as kernel:
            assert (await kernel.execute(_LEAVE_TRACES)).ok
        async with pool.lease() as kernel:
            assert _value(await kernel.execute(_LOOK_FOR_TRACES)) == (False, False, [], False)


async def test_forked_neighbours_cannot_see_each_other() -> None:
    listen = textwrap.dedent(
        """\
        import os, socket
        server = socket.socket(socket.AF_UNIX)
        server.bind("\\0nbagent-neighbour")  # abstract: visible to the whole network namespace
        server.listen()
        open("/tmp/mine.txt", "w").write("x")
        open("mine.txt", "w").write("x")
        (os.getpid(), os.getcwd())
        """
    )
    pool = KernelPool(2, KernelConfig(sandbox=True), start="fork")
    async with pool, pool.lease() as first, pool.lease() as second:
        pid, first_workspace = _value(await first.execute(listen))
        assert pid == 1  # the first process of its own PID namespace
        probe = textwrap.dedent(
            f"""\
            import os, socket
            client = socket.socket(socket.AF_UNIX)
            try:
                client.connect("\\0nbagent-neighbour")
                reached = True
            except OSError:
                reached = False
            (reached, os.path.exists("/tmp/mine.txt"), os.path.exists({first_workspace!r}),
             sorted(p for p in os.listdir("/proc") if p.isdigit()))
            """
        )
        assert _value(await second.execute(probe)) == (False, False, False, ["1"])


async def test_a_crashed_fork_and_a_dead_template_are_replaced() -> None:
    async with KernelPool(1, KernelConfig(sandbox=True), start="fork") as pool, pool.lease() as kernel:
        crashed = await kernel.execute("import ctypes\nctypes.string_at(0)")  # a real segfault
        assert crashed.status is CellStatus.CRASHED
        assert "segmentation fault" in (crashed.note or "")
        assert (await kernel.execute("x = 1")).ok
        forks = pool._forks
        assert forks is not None
        assert forks._process is not None
        os.killpg(forks._process.pid, signal.SIGKILL)
        lost = await kernel.execute("x", timeout=30)
        assert lost.status is CellStatus.CRASHED or lost.state_lost, lost
        again = await kernel.execute("print('back')")
        assert again.outputs == [StreamOutput(name="stdout", text="back\n")]


async def test_limits_and_timeouts_hold_in_forked_kernels() -> None:
    config = KernelConfig(sandbox=True, memory_limit_mb=300, cpu_time_limit_s=3, grace_s=5)
    async with KernelPool(1, config, start="fork") as pool, pool.lease() as kernel:
        big = await kernel.execute("b = bytearray(400 * 1024 * 1024)")
        assert big.status is CellStatus.ERROR
        assert isinstance(big.outputs[-1], ErrorOutput)
        assert big.outputs[-1].ename == "MemoryError"
        spin = await kernel.execute("while True:\n    pass", timeout=1)
        assert spin.status is CellStatus.TIMEOUT
        assert not spin.state_lost
        burn = await kernel.execute("while True:\n    pass", timeout=60)
        assert burn.status is CellStatus.CRASHED
        assert "CPU-time limit" in (burn.note or "")


async def test_forked_kernels_import_what_the_template_did_not() -> None:
    """The host's Python stays importable (bound back when it lives under the covered /tmp), debugpy
    too, which the template leaves out (the kernel has no debugger)."""
    async with KernelPool(1, KernelConfig(sandbox=True), start="fork") as pool, pool.lease() as kernel:
        code = (
            "import sys, psutil, decimal\n(psutil.__file__.startswith(sys.prefix), str(decimal.Decimal(1)))"
        )
        assert _value(await kernel.execute(code)) == (True, "1")
        code = (
            "import sys\nfrom ipykernel import debugger, ipkernel\nbefore = 'debugpy' in sys.modules\n"
            "import debugpy\n(before, debugger._is_debugpy_available, debugpy.__name__,"
            " get_ipython().kernel._kernel_modules, ipkernel.sys is sys)"
        )
        assert _value(await kernel.execute(code)) == (False, False, "debugpy", [], True)


_ITS_OWN_START = (
    "import os\n_a = get_ipython().kernel.parent\n"
    "(_a.options_parsed, _a.connection_file, get_ipython().profile_dir.location, os.environ['IPYTHONDIR'],"
    " get_ipython().history_manager.enabled, get_ipython().kernel._execute_sleep,"
    " _a.debugpy_socket, _a.debug_shell_socket)"
)


async def test_each_fork_starts_with_the_templates_options_and_its_own_files() -> None:
    """The template parsed the kernel's options once (`LeanKernelApp.prepare`): every fork has them,
    its own connection file and profile, and no debugger's sockets, and says nothing of it in its log."""
    async with KernelPool(2, KernelConfig(sandbox=True), start="fork") as pool:
        seen = []
        for kernel in pool.kernels:
            parsed, connection, profile, ipython_dir, history, sleep, *debug = _value(
                await kernel.execute(_ITS_OWN_START)
            )
            assert (parsed, history, sleep, debug) == (True, False, 0.0, [None, None])
            assert profile == os.path.join(ipython_dir, "profile_default")
            assert Path(connection).parent == Path(ipython_dir).parent  # the kernel's own folder
            assert (Path(connection).parent / "kernel.log").read_text() == ""
            seen.append((connection, profile))
        assert len({connection for connection, _ in seen}) == len({profile for _, profile in seen}) == 2


async def test_the_template_loads_the_pools_kernel_side_modules_once_for_every_fork() -> None:
    """`KernelPool(modules=...)`: every fork starts with them (no `ensure_module` round trip), each
    with its own copy: what one kernel changes in it, another does not see."""
    modules = {"_nbagent_probe": "VALUE = 42\n"}
    async with KernelPool(2, KernelConfig(sandbox=True), start="fork", modules=modules) as pool:
        first, second = pool.kernels
        assert "_nbagent_probe" in first._modules
        assert (
            _value(
                await first.execute("import _nbagent_probe\n_nbagent_probe.VALUE += 1\n_nbagent_probe.VALUE")
            )
            == 43
        )
        assert _value(await second.execute("import _nbagent_probe\n_nbagent_probe.VALUE")) == 42
        await first.ensure_module("_nbagent_probe", "VALUE = 0\n")  # already there: nothing sent
        assert _value(await first.execute("_nbagent_probe.VALUE")) == 43


def test_forking_needs_namespaces() -> None:
    with pytest.raises(ConfigError, match="private_processes=False"):
        ForkServer(KernelConfig(private_processes=False))


_MERGEABLE = "import ctypes\nctypes.CDLL(None).prctl(68, 0, 0, 0, 0)  # PR_GET_MEMORY_MERGE"


@pytest.mark.parametrize("start", ["launch", "fork"])
@pytest.mark.filterwarnings("ignore:KernelConfig.merge_memory:RuntimeWarning")
async def test_merge_memory_marks_the_kernel_process_mergeable(start: Any) -> None:
    """The flag reaches the kernel process itself (through exec for launched kernels, through the
    template's forks for forked ones), and only when asked for."""
    if ctypes.CDLL(None).prctl(68, 0, 0, 0, 0) < 0:
        pytest.skip("this Linux has no PR_SET_MEMORY_MERGE (6.4+)")
    for merge, expected in ((True, 1), (False, 0)):
        config = KernelConfig(sandbox=True, merge_memory=merge)
        async with KernelPool(1, config, start=start) as pool, pool.lease() as kernel:
            assert _value(await kernel.execute(_MERGEABLE)) == expected


def test_merge_memory_warns_while_ksm_does_not_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if ctypes.CDLL(None).prctl(68, 0, 0, 0, 0) < 0:
        pytest.skip("this Linux has no PR_SET_MEMORY_MERGE (6.4+)")
    (tmp_path / "run").write_text("0\n")
    monkeypatch.setattr(launch, "_KSM_RUN", tmp_path / "run")
    launch._warn_ksm_off.cache_clear()
    with pytest.warns(RuntimeWarning, match="echo 1 > "):
        assert launch.merge_memory(KernelConfig(merge_memory=True))
    assert not launch.merge_memory(KernelConfig())
