"""The kernel nbagent runs (`nbagent.kernel.lean_kernel`), on real kernels launched and forked: no shell
channel thread (and no subshells in its kernel_info reply), no debug records, top-level await and
async comprehensions still run, IPython's syntax and added transformations too; its memoized
`_accepts_parameters`; and `plain_python`, checked against IPython's own transformations."""

from __future__ import annotations

import ast
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from IPython.core.inputtransformer2 import TransformerManager
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

from nbagent.kernel import KernelConfig, KernelPool, launch, lean_kernel
from nbagent.kernel.lean_kernel import _memoized, plain_python
from nbagent.trajectory import CellResult, ExecuteResult, StreamOutput

_INSIDE = (
    "import logging, sys, threading\n"
    "_k = get_ipython().kernel\n"
    "(type(_k).__name__, type(_k.shell).__name__, sorted(t.name for t in threading.enumerate()),\n"
    " _k.log.getEffectiveLevel(), _k._supports_kernel_subshells, type(sys.stdout).__name__,\n"
    " type(sys.stderr).__name__)"
)


@pytest.mark.parametrize(
    ("start", "sandbox"),
    [
        ("launch", False),
        ("launch", True),
        pytest.param(
            "fork", True, marks=pytest.mark.skipif(launch.bwrap_unusable() is not None, reason="no bwrap")
        ),
    ],
)
async def test_kernels_run_the_lean_kernel_and_async_cells_still_work(start: str, sandbox: bool) -> None:
    async with KernelPool(1, KernelConfig(sandbox=sandbox), start=start) as pool:  # type: ignore[arg-type]
        kernel = pool.kernels[0]
        inside = await kernel.execute(_INSIDE)
        assert inside.ok, inside
        output = inside.outputs[-1]
        assert isinstance(output, ExecuteResult)
        name, shell, threads, level, subshells, *streams = ast.literal_eval(output.data["text/plain"])
        assert (name, shell) == ("LeanKernel", "LeanShell")
        assert streams == ["LeanOutStream", "LeanOutStream"]
        assert "Shell channel" not in threads
        assert "MainThread" in threads
        assert level == 30  # WARNING, the application's level
        assert subshells is False
        reply = kernel._process.client.kernel_info(reply=True, timeout=10)
        assert reply["content"]["status"] == "ok"
        assert "kernel subshells" not in reply["content"]["supported_features"]
        awaited = await kernel.execute("import asyncio\nawait asyncio.sleep(0.01)\n6 * 7")
        assert awaited.ok, awaited
        assert isinstance(awaited.outputs[-1], ExecuteResult)
        assert awaited.outputs[-1].data["text/plain"] == "42"
        comprehension = await kernel.execute("async def g():\n    yield 1\n[x async for x in g()]")
        assert comprehension.ok, comprehension
        assert isinstance(comprehension.outputs[-1], ExecuteResult)
        assert comprehension.outputs[-1].data["text/plain"] == "[1]"


def test_accepts_parameters_is_asked_once_per_function_and_answers_copies() -> None:
    calls: list[Any] = []

    def accepts(meth: Any, names: list[str]) -> dict[str, bool]:
        calls.append(meth)
        return dict.fromkeys(names, True)

    class Shell:
        def run_cell(self, cell_id: str = "") -> None: ...

    memoized = _memoized(accepts)
    first = memoized(Shell().run_cell, ["cell_id", "cell_meta"])
    first["cell_id"] = False
    again = memoized(Shell().run_cell, ["cell_id", "cell_meta"])  # another bound method, same function
    assert again == {"cell_id": True, "cell_meta": True}
    assert len(calls) == 1
    assert memoized(Shell().run_cell, ["cell_id"]) == {"cell_id": True}
    assert len(calls) == 2


_FRAGMENTS = [
    "x", "total", " ", "  ", "\t", "\n", "\r\n", "=", " = ", "==", "!=", "%", "%%", "!", "?", "??", ",",
    ";", "/", ">>> ", "... ", "In [1]: ", "[nav] ", "...: ", "(", ")", "[", "]", "'", '"', '"""', "#",
    "1", "print(x)", "if x:", "    ", "\\", "f'{x!r}'", "a % b", "'100%'", "len", ".", ":", "\x0c",
    "\r", "\x0b", "\u2028", "\x85", " \n", "\t\n", "x?", "=%", "= !", "\\\n",
]  # fmt: skip


@pytest.mark.filterwarnings("ignore:`make_tokens_by_line` received:UserWarning")  # IPython on \u2028 etc.
@settings(max_examples=500)
@given(st.lists(st.sampled_from(_FRAGMENTS), max_size=30).map("".join))
def test_a_plain_python_cell_is_what_ipython_would_make_of_it(cell: str) -> None:
    if not plain_python(cell):
        return
    try:
        transformed = TransformerManager().transform_cell(cell)
    except Exception:  # IPython's tokenizer gave up: Python must refuse the cell too
        with pytest.raises(SyntaxError):
            compile(cell, "<cell>", "exec")
        return
    assert transformed == (cell if cell.endswith("\n") else cell + "\n")


@pytest.mark.parametrize(
    "cell",
    [
        "%time x = 1\ny = 2",
        "x = 1\n%who",
        "%%time\nx = 1",
        "files = !ls\nfiles",
        "x = %pwd\nx",
        "!echo hi\nx = 1",
        "len?\nx = 1",
        "x = 1\nlen??",
        ">>> x = 1\n>>> x",
        "In [1]: x = 1\n   ...: y = 2",
        "\nx = 1\ny = 2",
        "    x = 1\n    y = 2",
        "x = 1\n,print a b",
        "x = 1\n/print 1",
    ],
)
def test_ipython_syntax_is_never_taken_for_plain_python(cell: str) -> None:
    assert TransformerManager().transform_cell(cell) != cell + "\n"  # IPython rewrites it
    assert not plain_python(cell)


def test_plain_python_covers_ordinary_agent_cells() -> None:
    cells = [
        "x = 6 * 7\nprint(x)",
        "import math\nvalues = [math.sqrt(i) for i in range(10)]\nprint(f'{sum(values)!r} is {100 % 7}%')\n",
        "def f(a, b):\n    return a != b\nprint(f(1, 2), 'why?', 10 % 3)",
    ]
    assert all(plain_python(cell) for cell in cells)
    assert not plain_python("x = 1")  # one line: IPython's dynamic transformations apply


def _stdout(result: CellResult) -> str:
    return "".join(o.text for o in result.outputs if isinstance(o, StreamOutput) and o.name == "stdout")


async def test_the_lean_kernel_still_runs_ipython_syntax_and_added_transformations() -> None:
    async with KernelPool(1, KernelConfig(sandbox=True), start="launch") as pool:
        kernel = pool.kernels[0]
        timed = await kernel.execute("%time y = 6 * 7\nprint(y)")
        assert timed.ok, timed
        assert "Wall time" in _stdout(timed)
        assert _stdout(timed).rstrip().endswith("42")
        shell = await kernel.execute("lines = !echo one two\nprint(lines)")
        assert shell.ok, shell
        assert "one two" in _stdout(shell)
        added = await kernel.execute(
            "get_ipython().input_transformers_cleanup.append(\n"
            "    lambda lines: [line.replace('SIX', '6') for line in lines])"
        )
        assert added.ok, added
        transformed = await kernel.execute("x = SIX * 7\nprint(x)")
        assert transformed.ok, transformed
        assert _stdout(transformed).strip() == "42"


async def test_each_cells_output_arrives_with_that_cell_when_quiet_cells_skip_their_flushes() -> None:
    """Silent cells skip the flush round trips; text written at a cell's very end (no newline, to
    stderr, from a thread that ends with the cell) still comes with that cell, never with the next.
    The order between stdout and stderr is not kept (each stream flushes on its own timer, as in
    ipykernel), so each stream is compared on its own."""
    async with KernelPool(1, KernelConfig(sandbox=True), start="launch") as pool:
        kernel = pool.kernels[0]
        cells = [
            ("import sys, threading", "", ""),
            ("sys.stdout.write('tail')", "tail", ""),
            ("pass", "", ""),
            ("print('out'); sys.stderr.write('err')", "out\n", "err"),
            ("x = 1", "", ""),
            (
                "t = threading.Thread(target=print, args=('from a thread',)); t.start(); t.join()",
                "from a thread\n",
                "",
            ),
            ("pass", "", ""),
        ]
        for _ in range(20):
            for code, stdout, stderr in cells:
                result = await kernel.execute(code)
                assert result.ok, result
                streams = [o for o in result.outputs if isinstance(o, StreamOutput)]
                got = tuple("".join(o.text for o in streams if o.name == n) for n in ("stdout", "stderr"))
                assert got == (stdout, stderr), (code, result.outputs)


def test_an_input_request_waits_for_a_stdin_socket_that_connects_late(tmp_path: Path) -> None:
    """A client whose stdin socket connects after the kernel listens (ZMQ retries each socket on its
    own timer) still gets the first input request: the kernel's ROUTER socket would drop it."""
    folder = tmp_path / "nbagent-lean"
    folder.mkdir()
    argv = [sys.executable, "-P", lean_kernel.__file__, "-f", "{connection_file}"]
    (folder / "kernel.json").write_text(json.dumps({"argv": argv, "language": "python"}))
    km = KernelManager(
        kernel_name="nbagent-lean", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(tmp_path)])
    )
    km.start_kernel(extra_arguments=["--HistoryManager.enabled=False"])
    try:
        kc = km.client()
        kc.start_channels(stdin=False, hb=False)
        kc.wait_for_ready(timeout=60)
        msg_id = kc.execute("get_ipython().kernel.raw_input('name?')", allow_stdin=True)
        time.sleep(0.5)  # the request is sent with no stdin peer connected
        request = kc.get_stdin_msg(timeout=10)  # connects the stdin socket, then waits
        assert (request["msg_type"], request["content"]["prompt"]) == ("input_request", "name?")
        kc.input("Ada")
        reply = kc.get_shell_msg(timeout=10)
        assert (reply["parent_header"]["msg_id"], reply["content"]["status"]) == (msg_id, "ok")
        while (msg := kc.get_iopub_msg(timeout=10))["msg_type"] != "execute_result":
            pass
        assert msg["content"]["data"]["text/plain"] == "'Ada'"
    finally:
        km.shutdown_kernel(now=True)
