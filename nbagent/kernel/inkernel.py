"""Code that runs inside every kernel, as the module ``_nbagent_kernel``.

`Kernel` sends this file's source to the kernel after each start (the host imports it only for
`HOST_CALL_PREFIX`). It lives in its own module, not the user namespace, so ``%reset`` keeps it. It
provides:

- a ``pre_run_cell`` hook that makes ``input()`` and ``getpass()`` raise a clear error: an agent's
  notebook has no user to answer, and a prompt would otherwise wait until the cell times out;
- `call_host`, which sends a JSON request to the host over the Jupyter stdin channel and returns the
  host's JSON reply (the tool bridge builds its stubs on it).
"""

from __future__ import annotations

import builtins
import getpass
import json
from typing import Any

HOST_CALL_PREFIX = "\x00nbagent:host-call\x00"


class InputNotAvailableError(RuntimeError):
    """``input()`` or ``getpass()`` was called, but nobody is there to answer."""


class HostUnavailableError(RuntimeError):
    """Kernel code asked the host for something, but this cell was run without a host handler."""


def _refuse_input(prompt: object = "") -> str:
    __tracebackhide__ = True
    raise InputNotAvailableError(
        "input() is not available: this notebook runs without a user to answer it. "
        "Write the value into the code instead."
    )


def _refuse_getpass(prompt: str = "Password: ", stream: object = None) -> str:
    __tracebackhide__ = True
    raise InputNotAvailableError(
        "getpass() is not available: this notebook runs without a user to answer it."
    )


def _block_user_input(*_: object) -> None:
    # ipykernel installs its own input() before each cell and restores it after; this hook runs after
    # that installation, so the replacement lasts exactly one cell too.
    builtins.input = _refuse_input
    getpass.getpass = _refuse_getpass


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    raise TypeError(
        f"got a value of type {type(value).__name__}, which cannot be sent to the host as JSON; "
        "pass str, int, float, bool, None, or lists and dicts of them"
    )


def call_host(request: dict[str, Any]) -> Any:
    """Send `request` to the host and return its decoded JSON reply."""
    __tracebackhide__ = True
    from IPython import get_ipython

    kernel = get_ipython().kernel
    if not getattr(kernel, "_allow_stdin", False):
        raise HostUnavailableError(
            "the host is not listening: this cell was run without a tool bridge (run it through "
            "ToolBridge.run_cell or pass an input_handler to Kernel.execute)"
        )
    payload = json.dumps(request, default=_json_default)
    return json.loads(kernel.raw_input(HOST_CALL_PREFIX + payload))


def install() -> None:
    """Register the input hook once per kernel process."""
    from IPython import get_ipython

    events = get_ipython().events
    if _block_user_input not in events.callbacks["pre_run_cell"]:
        events.register("pre_run_cell", _block_user_input)
