"""Kernel on a real ipykernel: outputs, bounded cells, crashes, floods, bad bytes, input, environment."""

from __future__ import annotations

import asyncio
import json
import sys

import pytest

from nbagent.errors import KernelError
from nbagent.kernel import Kernel, KernelConfig, render_cell
from nbagent.trajectory import CellStatus, DisplayData, ErrorOutput, ExecuteResult, StreamOutput
from tests.fixtures.kernels import wait_for_file

PNG_1X1 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="


async def test_outputs_come_back_in_nbformat_shapes(kernel: Kernel) -> None:
    code = (
        "import sys, base64\n"
        "from IPython.display import Image, display\n"
        "print('a'); print('b', flush=True); print('E', file=sys.stderr, flush=True); print('c')\n"
        f"display(Image(data=base64.b64decode({PNG_1X1!r})))\n"
        "6 * 7"
    )
    result = await kernel.execute(code)
    assert result.status is CellStatus.OK
    assert result.execution_count == 1
    assert result.outputs[:3] == [
        StreamOutput(name="stdout", text="a\nb\n"),
        StreamOutput(name="stderr", text="E\n"),
        StreamOutput(name="stdout", text="c\n"),
    ]
    display, value = result.outputs[3], result.outputs[4]
    assert isinstance(display, DisplayData)
    assert display.data["image/png"].replace("\n", "") == PNG_1X1
    assert value == ExecuteResult(data={"text/plain": "42"}, execution_count=1)
    assert result.duration_s > 0
    assert "[image/png, 70 bytes: kept in trajectory]" in render_cell(result)
    second = await kernel.execute("1")
    assert second.execution_count == 2


async def test_error_output_has_name_value_and_traceback(kernel: Kernel) -> None:
    result = await kernel.execute("def f():\n    raise ValueError('bad value')\nf()")
    assert result.status is CellStatus.ERROR
    (error,) = result.outputs
    assert isinstance(error, ErrorOutput)
    assert (error.ename, error.evalue) == ("ValueError", "bad value")
    assert any("f()" in line for line in error.traceback)
    text = render_cell(result)
    assert "\x1b" not in text
    assert "ValueError: bad value" in text


async def test_clear_output_and_display_updates(kernel: Kernel) -> None:
    code = (
        "from IPython.display import display, clear_output\n"
        "h = display('0%', display_id=True)\n"
        "print('noise')\n"
        "h.update('100%')\n"
        "clear_output(wait=True)\n"
        "h2 = display('start', display_id=True)\n"
        "h2.update('end')\n"
        "print('final')"
    )
    result = await kernel.execute(code)
    assert result.outputs == [
        DisplayData(data={"text/plain": "'end'"}),
        StreamOutput(name="stdout", text="final\n"),
    ]


async def test_sleep_past_timeout_is_interrupted_and_state_kept(kernel: Kernel) -> None:
    await kernel.execute("x = 41")
    result = await kernel.execute("import time\nx += 1\ntime.sleep(60)", timeout=1)
    assert result.status is CellStatus.TIMEOUT
    assert result.state_lost is False
    assert result.note is not None
    assert "timeout of 1 s" in result.note
    assert "variables are kept" in result.note
    assert (await kernel.execute("x")).outputs == [
        ExecuteResult(data={"text/plain": "42"}, execution_count=3)
    ]


async def test_infinite_loop_is_interrupted(kernel: Kernel) -> None:
    result = await kernel.execute("while True:\n    pass", timeout=1)
    assert result.status is CellStatus.TIMEOUT
    assert any(isinstance(o, ErrorOutput) and o.ename == "KeyboardInterrupt" for o in result.outputs)
    assert (await kernel.execute("'alive'")).ok


async def test_cell_that_ignores_the_interrupt_gets_the_kernel_restarted(kernel: Kernel) -> None:
    await kernel.execute("y = 1")
    generation = kernel.generation
    code = (
        "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nprint('stuck')\ntime.sleep(120)"
    )
    result = await kernel.execute(code, timeout=1)
    assert result.status is CellStatus.TIMEOUT
    assert result.state_lost is True
    assert result.note is not None
    assert "restarted" in result.note
    assert result.outputs == [StreamOutput(name="stdout", text="stuck\n")]
    assert kernel.generation == generation + 1
    after = await kernel.execute("y")
    assert after.status is CellStatus.ERROR
    assert isinstance(after.outputs[0], ErrorOutput)
    assert after.outputs[0].ename == "NameError"


async def test_os_exit_is_reported_as_crashed_and_the_kernel_comes_back(kernel: Kernel) -> None:
    old_pid = kernel.pid
    result = await kernel.execute("print('before')\nimport os\nos._exit(1)", timeout=60)
    assert result.status is CellStatus.CRASHED
    assert result.state_lost is True
    assert result.note is not None
    assert "exited with code 1" in result.note
    assert "restarted" in result.note
    assert kernel.alive
    assert kernel.pid != old_pid
    assert (await kernel.execute("1 + 1")).ok


async def test_segfault_is_reported_as_crashed(kernel: Kernel) -> None:
    result = await kernel.execute("import ctypes\nctypes.string_at(0)", timeout=60)
    assert result.status is CellStatus.CRASHED
    assert result.note is not None
    assert "SIGSEGV" in result.note
    assert "[crashed]" in render_cell(result)


@pytest.mark.slow
async def test_printing_50_mb_keeps_head_and_tail_only() -> None:
    config = KernelConfig(max_output_chars=100_000)
    async with Kernel(config) as kernel:
        result = await kernel.execute(
            "print('HEAD' + 'x' * 25_000_000)\nfor i in range(250): print('y' * 100_000)\nprint('TAIL')",
            timeout=120,
        )
    assert result.status is CellStatus.OK
    kept = sum(len(o.text) for o in result.outputs if isinstance(o, StreamOutput))
    assert kept < 100_000 + 300
    texts = [o.text for o in result.outputs if isinstance(o, StreamOutput)]
    assert texts[0].startswith("HEAD")
    assert texts[-1].endswith("TAIL\n")
    assert result.note is not None
    assert "characters than the 100,000 kept" in result.note
    assert len(result.model_dump_json()) < 200_000


async def test_invalid_utf8_output_survives(kernel: Kernel) -> None:
    code = (
        "import os, sys\n"
        "os.write(1, b'raw \\xff\\xfe bytes\\n')\n"
        "sys.stdout.write('lone \\udcff surrogate\\n')\n"
        "b'\\x80abc'.decode('utf-8', 'surrogateescape')"
    )
    result = await kernel.execute(code)
    assert result.status is CellStatus.OK
    text = "".join(o.text for o in result.outputs if isinstance(o, StreamOutput))
    assert "raw \ufffd\ufffd bytes" in text
    assert "lone \ufffd surrogate" in text
    json.loads(result.model_dump_json())  # the trajectory can store it
    assert "\ufffd" in render_cell(result) or "\\udc80" in render_cell(result)


async def test_input_raises_a_clear_error_instead_of_hanging(kernel: Kernel) -> None:
    for code in ("input('Your name? ')", "import getpass\ngetpass.getpass()"):
        result = await kernel.execute(code, timeout=30)
        assert result.status is CellStatus.ERROR
        error = result.outputs[-1]
        assert isinstance(error, ErrorOutput)
        assert error.ename == "InputNotAvailableError"
        assert "without a user" in error.evalue
    stdin = await kernel.execute("import sys\nsys.stdin.read()", timeout=30)
    assert stdin.status is not CellStatus.TIMEOUT


async def test_input_guard_survives_resets_once_and_leaves_no_names(kernel: Kernel) -> None:
    await kernel.reset()
    await kernel.reset()
    result = await kernel.execute("input()", timeout=30)
    assert isinstance(result.outputs[-1], ErrorOutput)
    assert result.outputs[-1].ename == "InputNotAvailableError"
    code = "len(get_ipython().events.callbacks['pre_run_cell']), [n for n in globals() if 'nb' in n]"
    listed = await kernel.execute(code)
    assert isinstance(listed.outputs[0], ExecuteResult)
    assert listed.outputs[0].data["text/plain"] == "(1, [])"


async def test_host_secrets_do_not_reach_the_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = {
        "OPENAI_API_KEY": "sk-nbagent-test-1",
        "HF_TOKEN": "hf-nbagent-test-2",
        "MY_SERVICE_SECRET": "nbagent-test-3",
        "GITHUB_TOKEN": "nbagent-test-4",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PYTHONPATH", "/nbagent-test-path")
    async with Kernel(KernelConfig(env={"ALLOWED_SETTING": "yes"})) as kernel:
        result = await kernel.execute("import os, json\nprint(json.dumps(dict(os.environ)))")
    (out,) = result.outputs
    assert isinstance(out, StreamOutput)
    env = json.loads(out.text)
    assert env["ALLOWED_SETTING"] == "yes"
    for name, value in secrets.items():
        assert name not in env
        assert value not in out.text
    assert "PYTHONPATH" not in env


async def test_kernel_runs_the_hosts_python(kernel: Kernel) -> None:
    result = await kernel.execute("import sys\nsys.executable")
    assert result.outputs == [ExecuteResult(data={"text/plain": repr(sys.executable)}, execution_count=1)]


async def test_workspace_is_the_working_directory(kernel: Kernel) -> None:
    result = await kernel.execute("import os\nopen('note.txt', 'w').write('hi')\nos.getcwd()")
    assert result.outputs == [
        ExecuteResult(data={"text/plain": repr(str(kernel.workspace))}, execution_count=1)
    ]
    assert (kernel.workspace / "note.txt").read_text() == "hi"


async def test_startup_code_runs_after_start_restart_and_reset() -> None:
    config = KernelConfig(startup_code=["import math\nGREETING = 'hello'"])
    async with Kernel(config) as kernel:
        assert (await kernel.execute("GREETING")).outputs[0] == ExecuteResult(
            data={"text/plain": "'hello'"}, execution_count=1
        )
        await kernel.restart()
        assert (await kernel.execute("math.pi > 3")).ok
        await kernel.execute("GREETING = 'changed'")
        await kernel.reset()
        result = await kernel.execute("GREETING")
        assert isinstance(result.outputs[0], ExecuteResult)
        assert result.outputs[0].data["text/plain"] == "'hello'"


async def test_failing_startup_code_raises_kernel_error_naming_it() -> None:
    kernel = Kernel(KernelConfig(startup_code=["x = 1", "import not_a_module_nbagent"]))
    with pytest.raises(KernelError, match=r"startup_code\[1\].*ModuleNotFoundError"):
        await kernel.start()
    assert not kernel.alive


async def test_misuse_raises_clear_errors() -> None:
    kernel = Kernel()
    with pytest.raises(KernelError, match="not started"):
        await kernel.execute("1")
    async with kernel:
        with pytest.raises(ValueError, match="timeout"):
            await kernel.execute("1", timeout=0)
    with pytest.raises(KernelError, match="shut down"):
        await kernel.execute("1")


async def test_concurrent_cells_on_one_kernel_run_one_at_a_time(kernel: Kernel) -> None:
    first, second = await asyncio.gather(
        kernel.execute("import time\ntime.sleep(0.3)\nx = 1"), kernel.execute("x + 1")
    )
    assert first.ok
    assert second.outputs[0] == ExecuteResult(data={"text/plain": "2"}, execution_count=2)


async def test_shutdown_during_a_cell_ends_it_as_crashed(kernel: Kernel) -> None:
    cell = asyncio.create_task(kernel.execute("open('started', 'w').close()\nimport time\ntime.sleep(60)"))
    await wait_for_file(kernel.workspace / "started")
    await kernel.shutdown()
    result = await cell
    assert result.status is CellStatus.CRASHED
    assert result.note == "The kernel was shut down while this cell ran."


async def test_a_cancelled_cell_leaves_a_kernel_that_restarts_on_next_use(kernel: Kernel) -> None:
    await kernel.execute("z = 1")
    cell = asyncio.create_task(kernel.execute("open('started', 'w').close()\nimport time\ntime.sleep(60)"))
    await wait_for_file(kernel.workspace / "started")
    cell.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cell
    result = await kernel.execute("'z' in globals()")
    assert result.state_lost is True
    assert result.note is not None
    assert "abandoned" in result.note
    assert result.outputs[0] == ExecuteResult(data={"text/plain": "False"}, execution_count=1)


async def test_ensure_module_sends_the_source_once_per_process(kernel: Kernel) -> None:
    sent: list[str] = []
    run_internal = kernel._run_internal

    async def counting(code: str, what: str) -> None:
        sent.append(what)
        await run_internal(code, what)

    kernel._run_internal = counting  # type: ignore[method-assign]
    await kernel.ensure_module("_probe", "VALUE = 41 + 1\n")
    await kernel.ensure_module("_probe", "VALUE = 41 + 1\n")
    assert "'_probe'" not in render_cell(await kernel.execute("sorted(globals())"))
    await kernel.reset()
    assert render_cell(await kernel.execute("import _probe; _probe.VALUE")) == "42"
    assert sent.count("loading the module _probe") == 1
    await kernel.restart()
    await kernel.ensure_module("_probe", "VALUE = 41 + 1\n")
    assert sent.count("loading the module _probe") == 2
    assert (await kernel.execute("import _probe; _probe.VALUE")).ok


async def test_ensure_module_names_a_broken_source(kernel: Kernel) -> None:
    with pytest.raises(KernelError, match=r"loading the module _broken failed.*ZeroDivisionError"):
        await kernel.ensure_module("_broken", "1 / 0\n")
