"""The kernel nbagent runs (`nbagent.kernel.lean_kernel`), on real kernels launched and forked: no shell
channel thread (and no subshells in its kernel_info reply), no debug records, top-level await and
async comprehensions still run, IPython's syntax and added transformations too; its memoized
`_accepts_parameters`; and `plain_python`, checked against IPython's own transformations."""

from __future__ import annotations

import ast
import asyncio
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st
from IPython.core.inputtransformer2 import TransformerManager
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

from nbagent.kernel import KernelConfig, KernelPool, launch, lean_kernel
from nbagent.kernel.lean_kernel import _memoized, plain_python
from nbagent.trajectory import CellResult, ExecuteResult, StreamOutput

_INSIDE = (
    "import logging, os, sys, threading\n"
    "_k = get_ipython().kernel\n"
    "(type(_k).__name__, type(_k.shell).__name__, sorted(t.name for t in threading.enumerate()),\n"
    " _k.log.getEffectiveLevel(), _k._supports_kernel_subshells, type(sys.stdout).__name__,\n"
    " type(sys.stderr).__name__,\n"
    " sorted(open(f'/proc/self/task/{t}/comm').read().strip() for t in os.listdir('/proc/self/task')))"
)
_HOLD_THE_GIL = "sum(range(400_000_000))\nopen('held', 'w').close()"
"""A cell that holds the GIL for seconds (one C call), then leaves a file in its workspace."""


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
        name, shell, threads, level, subshells, *streams, tasks = ast.literal_eval(output.data["text/plain"])
        assert (name, shell) == ("LeanKernel", "LeanShell")
        # One ZMQ context (the heartbeat's is the kernel's), and its heart beats while a cell holds the GIL.
        assert [task for task in tasks if task.startswith("ZMQbg")] == ["ZMQbg/IO/0", "ZMQbg/Reaper"]
        busy = asyncio.create_task(kernel.execute(_HOLD_THE_GIL, timeout=120))
        await asyncio.sleep(0.5)
        heart = zmq.Context.instance().socket(zmq.REQ)
        try:
            heart.connect(kernel._process.client._make_url("hb"))
            heart.send(b"beat")
            assert heart.poll(5_000), "no heartbeat in 5 s while a cell held the GIL"
            assert heart.recv() == b"beat"
            assert not (kernel.workspace / "held").exists()
        finally:
            heart.close(linger=0)
        assert (await busy).ok
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
    assert all(plain_python(cell) for cell in [*cells, "x = 1", "print('hello')"])
    assert not plain_python("")


def _result_text(result: CellResult) -> str:
    return "".join(o.data["text/plain"] for o in result.outputs if isinstance(o, ExecuteResult))


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
        # One-line cells, plain Python to the static transformations, still get the dynamic ones.
        magic = await kernel.execute("pwd")  # automagic: %pwd where no variable is named pwd
        assert magic.ok, magic
        assert _result_text(magic) == repr(str(kernel.workspace))
        shadowed = await kernel.execute("pwd = 'mine'\npwd")
        assert _result_text(shadowed) == "'mine'"
        assert (await kernel.execute("%autocall 2")).ok
        autocall = await kernel.execute("len 'abcd'")
        assert _result_text(autocall) == "4"
        added = await kernel.execute(
            "get_ipython().input_transformers_cleanup.append(\n"
            "    lambda lines: [line.replace('SIX', '6') for line in lines])"
        )
        assert added.ok, added
        transformed = await kernel.execute("x = SIX * 7\nprint(x)")
        assert transformed.ok, transformed
        assert _stdout(transformed).strip() == "42"


async def test_each_cells_output_arrives_with_that_cell() -> None:
    """Text written at a cell's very end (no newline, to stderr, from a thread that ends with the
    cell, with ``os.write`` to fd 1 or 2, by a subprocess) comes with that cell, never with the next,
    also after silent cells that skip their flushes. The order between stdout and stderr is not kept
    (each stream flushes on its own timer, as in ipykernel), so each stream is compared on its own;
    nor between ``print`` and ``os.write`` (one waits for a flush, the other for the pipe's reader)."""
    async with KernelPool(1, KernelConfig(sandbox=True), start="launch") as pool:
        kernel = pool.kernels[0]
        cells = [
            ("import os, subprocess, sys, threading", "", ""),
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
            ("os.write(1, b'fd-out')", "fd-out", ""),
            ("os.write(2, b'fd-err')", "", "fd-err"),
            ("subprocess.run(['echo', 'sub'])", "sub\n", ""),
            ("print('q', end=''); os.write(1, b'p')", "pq", ""),
        ]
        for _ in range(20):
            for code, stdout, stderr in cells:
                result = await kernel.execute(code)
                assert result.ok, result
                streams = [o for o in result.outputs if isinstance(o, StreamOutput)]
                got = ["".join(o.text for o in streams if o.name == n) for n in ("stdout", "stderr")]
                if code.startswith("print('q'"):
                    got[0] = "".join(sorted(got[0]))
                assert got == [stdout, stderr], (code, result.outputs)


@pytest.fixture
def lean_manager(tmp_path: Path) -> Iterator[KernelManager]:
    """A lean kernel started by jupyter_client's own `KernelManager`, as any frontend would."""
    folder = tmp_path / "nbagent-lean"
    folder.mkdir()
    argv = [sys.executable, "-P", lean_kernel.__file__, "-f", "{connection_file}"]
    (folder / "kernel.json").write_text(json.dumps({"argv": argv, "language": "python"}))
    km = KernelManager(
        kernel_name="nbagent-lean", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(tmp_path)])
    )
    # Without pytest's variable, with which ipykernel would leave the file descriptors alone.
    env = {key: value for key, value in os.environ.items() if key != "PYTEST_CURRENT_TEST"}
    km.start_kernel(extra_arguments=["--HistoryManager.enabled=False"], env=env)
    try:
        yield km
    finally:
        km.shutdown_kernel(now=True)


def _client(km: KernelManager) -> Any:
    kc = km.client()
    kc.start_channels(stdin=False, hb=False)
    kc.wait_for_ready(timeout=60)
    return kc


def _stream_text(kc: Any, until: str, timeout: float = 10) -> str:
    """The text of stream messages on IOPub, read until it contains `until`."""
    text = ""
    deadline = time.monotonic() + timeout
    while until not in text:
        msg = kc.get_iopub_msg(timeout=max(deadline - time.monotonic(), 0.01))
        if msg["msg_type"] == "stream":
            text += msg["content"]["text"]
    return text


def test_an_input_request_waits_for_a_stdin_socket_that_connects_late(lean_manager: KernelManager) -> None:
    """A client whose stdin socket connects after the kernel listens (ZMQ retries each socket on its
    own timer) still gets the first input request: the kernel's ROUTER socket would drop it."""
    kc = _client(lean_manager)
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


def test_a_thread_prints_while_the_cell_still_runs(lean_manager: KernelManager, tmp_path: Path) -> None:
    """Text a thread prints while the cell's main thread waits goes out on the IOPub thread's timed
    flush, not only with the reply: the cell waits for a file this test writes once it saw the text."""
    kc = _client(lean_manager)
    flag = tmp_path / "seen"
    kc.execute(
        "import os, threading, time\n"
        "threading.Thread(target=print, args=('early',)).start()\n"
        f"while not os.path.exists({str(flag)!r}):\n"
        "    time.sleep(0.01)\n"
        "print('late')"
    )
    assert "late" not in _stream_text(kc, until="early")
    flag.touch()
    assert _stream_text(kc, until="late") == "late\n"
    assert kc.get_shell_msg(timeout=10)["content"]["status"] == "ok"


def test_a_subprocess_prints_while_the_cell_still_runs(lean_manager: KernelManager, tmp_path: Path) -> None:
    """Text written to the stream's file descriptor (a subprocess's) is read by the IOPub thread while
    the cell waits, sent as that cell's output, and more of it than a pipe holds does not block the
    writer: the cell waits for a file this test writes once it saw the text."""
    kc = _client(lean_manager)
    flag = tmp_path / "seen"
    msg_id = kc.execute(
        "import os, subprocess, sys, time\n"
        "subprocess.run([sys.executable, '-c', 'print(\"y\" * 300_000); print(\"early\")'], check=True)\n"
        f"while not os.path.exists({str(flag)!r}):\n"
        "    time.sleep(0.01)\n"
        "print('late')"
    )
    text, parents = "", set()
    deadline = time.monotonic() + 30
    while "early" not in text:
        msg = kc.get_iopub_msg(timeout=max(deadline - time.monotonic(), 0.01))
        if msg["msg_type"] == "stream":
            text += msg["content"]["text"]
            parents.add(msg["parent_header"]["msg_id"])
    assert (text, parents) == ("y" * 300_000 + "\nearly\n", {msg_id})
    flag.touch()
    assert _stream_text(kc, until="late") == "late\n"
    assert kc.get_shell_msg(timeout=10)["content"]["status"] == "ok"


def test_a_forked_subprocess_prints_through_the_kernel(lean_manager: KernelManager) -> None:
    """A child of ``os.fork`` sends its text the way ipykernel's forked subprocesses do (a pipe to the
    kernel's IOPub thread), not on the socket the kernel sends its own messages on directly."""
    kc = _client(lean_manager)
    kc.execute(
        "import os, sys\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    print('from the child'); sys.stdout.flush(); os._exit(0)\n"
        "os.waitpid(pid, 0)\n"
        "print('parent done')"
    )
    assert "from the child\n" in _stream_text(kc, until="from the child\n")
    assert kc.get_shell_msg(timeout=10)["content"]["status"] == "ok"


def test_a_frontend_that_subscribes_while_cells_print_is_welcomed(lean_manager: KernelManager) -> None:
    """The kernel's own thread sends on the IOPub socket while its IOPub thread reads subscriptions;
    one that comes in during a stream of messages is still welcomed (JEP 65's iopub_welcome, sent to
    the first subscriber of a topic: XPUB passes on only a topic's first subscription)."""
    kc = _client(lean_manager)
    kc.execute(
        "import time\nt = time.monotonic()\nwhile time.monotonic() - t < 4:\n    print('x', flush=True)"
    )
    time.sleep(0.2)
    for n in range(8):  # each a new topic's first subscriber
        late = zmq.Context.instance().socket(zmq.SUB)
        topic = f"late frontend {n}".encode()
        try:
            late.connect(f"tcp://127.0.0.1:{lean_manager.iopub_port}")
            late.subscribe(topic)
            assert late.poll(10_000), f"no welcome for subscriber {n} in 10 s"
            frames = late.recv_multipart()
        finally:
            late.close(linger=0)
        header = json.loads(frames[frames.index(b"<IDS|MSG>") + 2])
        assert (frames[0], header["msg_type"]) == (topic, "iopub_welcome")
    assert kc.get_shell_msg(timeout=10)["content"]["status"] == "ok"


def test_a_shutdown_request_ends_the_kernels_process(lean_manager: KernelManager) -> None:
    """A frontend's shutdown_request ends the process by itself, an input never asked for (its stdin
    monitor still open) and the heartbeat on the kernel's own ZMQ context notwithstanding: ipykernel
    terminates that context last, which waits for every socket of it to close."""
    kc = _client(lean_manager)
    process = lean_manager.provisioner.process  # type: ignore[union-attr]
    kc.shutdown()
    deadline = time.monotonic() + 30
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() == 0, "the kernel did not exit within 30 s of a shutdown request"


def _switches(pid: int) -> int:
    """How often the main thread of process `pid` has given up the CPU (each sleep and wake-up)."""
    status = Path(f"/proc/{pid}/task/{pid}/status").read_text()
    return int(status.split("voluntary_ctxt_switches:")[1].split()[0])


def test_a_kernel_awaiting_an_input_reply_sleeps_drops_junk_and_wakes_for_an_interrupt(
    lean_manager: KernelManager,
) -> None:
    """While the host computes a tool's reply the kernel does not wake (ipykernel polls every 10 ms: a
    thousand waiting kernels took the CPU the host needed to answer them); a message that is not a
    valid reply is dropped and the wait goes on; an interrupt ends the wait at once."""
    kc = _client(lean_manager)
    kc.start_channels(shell=False, iopub=False, stdin=True, hb=False)
    pid = lean_manager.provisioner.process.pid  # type: ignore[union-attr]
    kc.execute("get_ipython().kernel.raw_input('tool?')", allow_stdin=True)
    assert kc.get_stdin_msg(timeout=10)["content"]["prompt"] == "tool?"
    before = _switches(pid)
    time.sleep(1.0)
    assert _switches(pid) - before <= 5, "the main thread woke while awaiting the reply"

    kc.stdin_channel.socket.send_multipart([b"<IDS|MSG>", b"not signed", b"{}", b"{}", b"{}", b"{}"])
    kc.input("Ada")
    while (msg := kc.get_iopub_msg(timeout=10))["msg_type"] != "execute_result":
        pass
    assert msg["content"]["data"]["text/plain"] == "'Ada'"

    msg_id = kc.execute("get_ipython().kernel.raw_input('again?')", allow_stdin=True)
    kc.get_stdin_msg(timeout=10)
    lean_manager.interrupt_kernel()
    while (reply := kc.get_shell_msg(timeout=10))["parent_header"]["msg_id"] != msg_id:
        pass
    assert (reply["content"]["status"], reply["content"]["ename"]) == ("error", "KeyboardInterrupt")
