"""ipykernel's kernel with less work per message: what every nbagent kernel runs.

The same `IPythonKernel` and Jupyter protocol, with three costs of ipykernel 7 removed (measured with
py-spy on a kernel running ``x = 6 * 7; print(x)`` cells; together about a fifth of its CPU per cell):

- No shell channel thread. ipykernel 7 receives every shell message on a thread of its own that checks
  it and forwards it to the main thread over an in-process socket, and sends every reply back the same
  way: two thread hand-offs per request, which cost most when hundreds of kernels share two cores.
  That thread exists for subshells (JEP 91), which nbagent never asks for; without it the main thread
  reads the shell socket itself, ipykernel's own code path for kernels without subshells.
- The log's level is the application's. traitlets leaves the logger at DEBUG and filters in the
  handler, so each request formats half a dozen debug records that nobody sees.
- `_accepts_parameters`, which ipykernel calls with `inspect.signature` on every execute request, is
  answered once per method.

Runs as a script (``python -P lean_kernel.py -f CONNECTION_FILE ...``, like ``ipykernel_launcher``)
and is imported by file in the fork template. It imports only the standard library and ipykernel.
"""

from __future__ import annotations

import threading
from typing import Any

from ipykernel import ipkernel
from ipykernel.ipkernel import IPythonKernel
from ipykernel.kernelapp import IPKernelApp


class _NoShellChannelThread:
    """Stands in for the shell channel thread: false, so ipykernel takes its path without one, and
    naming the main thread as the one that runs cells (read when an async cell may be interrupted)."""

    @property
    def parent_thread(self) -> threading.Thread:
        return threading.main_thread()

    def __bool__(self) -> bool:
        return False


class LeanKernel(IPythonKernel):
    """`IPythonKernel` that reads its shell socket on the main thread (no subshells)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)  # type: ignore[no-untyped-call]
        self.shell_channel_thread = _NoShellChannelThread()

    @property
    def _supports_kernel_subshells(self) -> bool:
        return False


class LeanKernelApp(IPKernelApp):
    """`IPKernelApp` that starts a `LeanKernel`: no shell channel thread, no debug records."""

    kernel_class = LeanKernel

    def init_control(self, context: Any) -> None:
        super().init_control(context)  # type: ignore[no-untyped-call]
        self.shell_channel_thread = None

    def initialize(self, argv: list[str] | None = None) -> None:
        super().initialize(argv)  # type: ignore[no-untyped-call]
        self.log.setLevel(self.log_level)


def _memoized(accepts: Any) -> Any:
    answers: dict[tuple[Any, tuple[str, ...]], dict[str, bool]] = {}

    def accepts_parameters(meth: Any, param_names: list[str]) -> dict[str, bool]:
        key = (getattr(meth, "__func__", meth), tuple(param_names))
        if key not in answers:
            answers[key] = accepts(meth, param_names)
        return dict(answers[key])

    return accepts_parameters


if hasattr(ipkernel, "_accepts_parameters"):
    ipkernel._accepts_parameters = _memoized(ipkernel._accepts_parameters)


if __name__ == "__main__":
    LeanKernelApp.launch_instance()
