"""`ToolBridge`: host tools that kernel code calls as plain Python functions.

The kernel gets one stub per tool with the tool's signature and docstring. Calling a stub sends the
arguments as JSON to the host over the Jupyter stdin channel (an ``input_request`` whose prompt carries a
private prefix; the stdin channel works while a cell runs, comm messages do not); the host validates
them, runs the real function (async tools on the host's event loop, sync ones in a worker thread), and
replies with the JSON result or the error. The stub shows the displays of a `ToolReturn` in the cell and
returns the result, or raises ``TypeError`` for bad arguments and ``ToolError`` (a class defined in the
kernel) for a tool that failed. Every call is recorded as a `ToolCallRecord` on the cell's result.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from nbagent.errors import ToolArgumentError, ToolError
from nbagent.kernel import InputHandler, Kernel, kernel_module_code, render_cell
from nbagent.kernel.cell import join_notes
from nbagent.kernel.inkernel import HOST_CALL_PREFIX
from nbagent.kernel.stdin import EOF_REPLY
from nbagent.tools.render import format_annotation, format_default
from nbagent.tools.results import ToolReturn
from nbagent.tools.run_context import RunContext
from nbagent.tools.tool import Tool
from nbagent.tools.toolset import Toolset
from nbagent.trajectory import CellResult, ToolCallRecord

log = logging.getLogger("nbagent.tools")

_KERNEL_MODULE = "_nbagent_tools"

# Runs in the kernel as the module `_nbagent_tools` (see `kernel_module_code`).
_KERNEL_SIDE = '''\
import inspect
import sys

from IPython.display import display as _display

_host = sys.modules["_nbagent_kernel"]


class ToolError(Exception):
    """A host tool failed; the message says why."""


class _Shown:
    """Shows a type or default in help() exactly as the prompt's stub spells it."""

    def __init__(self, text):
        self.text = text

    def __repr__(self):
        return self.text


def _stub(spec):
    name = spec["name"]
    params = [
        inspect.Parameter(
            p["name"],
            getattr(inspect.Parameter, p["kind"]),
            default=_Shown(p["default"]) if "default" in p else inspect.Parameter.empty,
            annotation=_Shown(p["annotation"]),
        )
        for p in spec["params"]
    ]
    signature = inspect.Signature(params, return_annotation=_Shown(spec["returns"]))

    def stub(*args, **kwargs):
        __tracebackhide__ = True
        try:
            bound = signature.bind(*args, **kwargs)
            reply = _host.call_host({"tool": name, "args": list(bound.args), "kwargs": dict(bound.kwargs)})
        except TypeError as exc:
            raise TypeError(f"{name}() {exc}") from None
        except _host.HostUnavailableError as exc:
            raise ToolError(f"{name}() cannot run: {exc}") from None
        if "result" in reply:
            for bundle in reply.get("displays", ()):
                _display(bundle, raw=True)
            return reply["result"]
        error = TypeError if reply.get("kind") == "argument" else ToolError
        raise error(reply.get("message", "the tool failed")) from None

    stub.__name__ = stub.__qualname__ = name
    stub.__doc__ = spec["doc"]
    stub.__signature__ = signature
    return stub


def install(specs):
    namespace = get_ipython().user_ns
    namespace["ToolError"] = ToolError
    for spec in specs:
        namespace[spec["name"]] = _stub(spec)
'''


def _param_spec(param: inspect.Parameter) -> dict[str, str]:
    spec = {
        "name": param.name,
        "kind": param.kind.name,
        "annotation": format_annotation(param.annotation),
    }
    if param.default is not param.empty:
        spec["default"] = format_default(param.default)
    return spec


def _tool_spec(tool: Tool) -> dict[str, Any]:
    return {
        "name": tool.name,
        "doc": tool.docstring,
        "returns": format_annotation(tool.signature.return_annotation),
        "params": [_param_spec(param) for param in tool.signature.parameters.values()],
    }


def kernel_module() -> tuple[str, str]:
    """The name and source of the kernel-side module of the tool stubs (`Kernel.ensure_module`)."""
    return _KERNEL_MODULE, _KERNEL_SIDE


class ToolBridge:
    """Makes a toolset callable from code running in a `Kernel`.

    `run_cell` is all most callers need: it installs the stubs when the kernel needs them (after a
    start, restart or reset), runs the cell and attaches the tool calls to its result. To drive
    `Kernel.execute` yourself, run `setup_code` in the kernel and pass `input_handler`; calls made
    that way are recorded in `calls`.
    """

    def __init__(
        self, toolset: Toolset | Iterable[Tool | Callable[..., Any]], ctx: RunContext[Any] | None = None
    ) -> None:
        self.toolset = toolset if isinstance(toolset, Toolset) else Toolset(toolset)
        self.ctx = ctx
        self.calls: list[ToolCallRecord] = []
        """Calls answered through `input_handler` (not those of `run_cell`, which go on its result)."""
        self._installed: weakref.WeakKeyDictionary[Kernel, int] = weakref.WeakKeyDictionary()

    def setup_code(self, *, with_module: bool = True) -> str:
        """Kernel code that defines one stub per tool (and ``ToolError``) in the user namespace. Without
        `with_module` it expects the module `_nbagent_tools` in the kernel already (`install` loads it
        once per kernel process with `Kernel.ensure_module`)."""
        specs = json.dumps([_tool_spec(tool) for tool in self.toolset])
        module = kernel_module_code(_KERNEL_MODULE, _KERNEL_SIDE) if with_module else ""
        return f"{module}__import__({_KERNEL_MODULE!r}).install(__import__('json').loads({specs!r}))\n"

    @property
    def input_handler(self) -> InputHandler:
        """Answers the kernel's tool calls, recording them in `calls`."""

        async def handle(prompt: str, password: bool) -> str:
            return await self._answer(prompt, self.calls)

        return handle

    async def install(self, kernel: Kernel, *, then: str = "") -> None:
        """Define the stubs in `kernel` unless they are there already, and run the code `then` after them
        in the same cell (one round trip instead of two). Raises `ToolError` on failure."""
        fresh = self._installed.get(kernel) != kernel.generation
        if fresh:
            await kernel.ensure_module(_KERNEL_MODULE, _KERNEL_SIDE)
        code = (self.setup_code(with_module=False) if fresh else "") + then
        if not code:
            return
        result = await kernel.execute(code, timeout=60, store_history=False)
        if not result.ok:
            raise ToolError(f"installing the tool stubs in the kernel failed:\n{render_cell(result)}")
        self._installed[kernel] = kernel.generation

    async def run_cell(self, kernel: Kernel, code: str, timeout: float | None = 60.0) -> CellResult:  # noqa: ASYNC109
        """Run `code` in `kernel` with the tools available; the result lists the tool calls made."""
        revived = await kernel.ensure_running()
        await self.install(kernel)
        records: list[ToolCallRecord] = []

        async def handle(prompt: str, password: bool) -> str:
            return await self._answer(prompt, records)

        result = await kernel.execute(code, timeout, handle)
        result.tool_calls = records
        if revived:
            result.state_lost = True
            result.note = join_notes(revived, result.note)
        return result

    async def _answer(self, prompt: str, records: list[ToolCallRecord]) -> str:
        if not prompt.startswith(HOST_CALL_PREFIX):
            return EOF_REPLY  # not a tool call: the kernel's input() gets EOFError
        started = time.perf_counter()
        try:
            request = json.loads(prompt[len(HOST_CALL_PREFIX) :])
            name, args, kwargs = str(request["tool"]), list(request["args"]), dict(request["kwargs"])
        except (ValueError, KeyError, TypeError) as exc:
            return json.dumps({"kind": "protocol", "message": f"malformed tool call from the kernel ({exc})"})
        record = ToolCallRecord(name=name, args=args, kwargs=kwargs)
        records.append(record)
        try:
            result = await self.toolset.get(name).invoke(args, kwargs, self.ctx)
            if isinstance(result, ToolReturn):
                reply = json.dumps({"result": result.value, "displays": list(result.displays)})
                result = result.value
            else:
                reply = json.dumps({"result": result})
            record.result = result
        except ToolArgumentError as exc:
            record.error = f"{type(exc).__name__}: {exc}"
            reply = json.dumps({"kind": "argument", "message": str(exc)})
        except ToolError as exc:
            record.error = f"{type(exc).__name__}: {exc}"
            reply = json.dumps({"kind": "tool", "message": str(exc)})
        except asyncio.CancelledError:
            record.error = "cancelled: the cell ended (timeout or crash) before the tool returned"
            raise
        except Exception as exc:
            log.exception("tool %r failed outside its function", name)
            record.error = f"{type(exc).__name__}: {exc}"
            reply = json.dumps(
                {"kind": "tool", "message": f"tool {name!r} failed: {type(exc).__name__}: {exc}"}
            )
        finally:
            record.latency_s = time.perf_counter() - started
        return reply
