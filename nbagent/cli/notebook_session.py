"""The notebook behind `nbagent mcp`: one persistent kernel shared by every tool call, and the agent.

The kernel starts on first use and is restarted by `Kernel` itself after a crash. The workspace is the
server's for its whole life (a temporary folder unless one is given): the kernel and the agent's
kernels work in it, so files pass between `run_cell` and `ask_agent` while their variables stay apart.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbagent.agent import Agent
from nbagent.errors import KernelError, NBAgentError
from nbagent.kernel import CellResult, CellStatus, DisplayData, ErrorOutput, Kernel, KernelConfig

if TYPE_CHECKING:
    from nbagent.agent import RunResult
    from nbagent.models.base import Model

VARIABLES_MIME = "application/vnd.nbagent.variables+json"
REPR_CHARS = 120
"""Characters of each variable's one-line repr in `NotebookSession.variables`."""

# Runs in the kernel (not stored in its history): every user name with its type and a short repr,
# sent back as one display bundle so that stray prints of background threads cannot garble it.
_VARIABLES_CODE = f"""\
def _nb_variables():
    import reprlib
    from IPython.display import display
    shell = get_ipython()
    hidden, missing = shell.user_ns_hidden, object()
    short = reprlib.Repr()
    short.maxstring = short.maxother = {REPR_CHARS}
    rows = []
    for name, value in list(shell.user_ns.items()):
        if name.startswith('_') or hidden.get(name, missing) is value:
            continue
        kind = type(value)
        module = '' if kind.__module__ == 'builtins' else kind.__module__ + '.'
        try:
            text = ' '.join(short.repr(value).split())
        except Exception as exc:
            text = f'<repr failed: {{type(exc).__name__}}>'
        if len(text) > {REPR_CHARS}:
            text = text[: {REPR_CHARS - 3}] + '...'
        rows.append({{'name': name, 'type': module + kind.__qualname__, 'repr': text}})
    display({{{VARIABLES_MIME!r}: rows}}, raw=True)
_nb_variables()
del _nb_variables
"""


class NotebookSession:
    """The kernel of an MCP server, started on first use and shut down by `aclose`, and the agent that
    answers `ask`, if any. Cells of all callers run one at a time, in the same namespace."""

    def __init__(
        self, config: KernelConfig, model: Model | None = None, agent_settings: dict[str, Any] | None = None
    ) -> None:
        self._own_workspace = config.workspace is None
        workspace = Path(tempfile.mkdtemp(prefix="nbagent-mcp-")) if config.workspace is None else None
        self.config = config if workspace is None else config.model_copy(update={"workspace": workspace})
        """The kernel's settings, the workspace always set."""
        self.agent: Agent[None, str] | None = None
        """The agent on `model` with `agent_settings` (`Agent` keyword arguments), whose kernels get
        `config` too; None without a model."""
        if model is not None:
            self.agent = Agent(model, **{**(agent_settings or {}), "kernel_config": self.config})
        self._kernel: Kernel | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    @property
    def workspace(self) -> Path:
        assert self.config.workspace is not None
        return self.config.workspace

    async def kernel(self) -> Kernel:
        """The kernel, started now if this is the first call. `KernelError` or `ConfigError` when it
        cannot start (the next call tries again)."""
        async with self._lock:
            if self._closed:
                raise KernelError("the server is shutting down")
            if self._kernel is None:
                kernel = Kernel(self.config)
                await kernel.start()
                self._kernel = kernel
            return self._kernel

    async def run(self, code: str, timeout_s: float) -> CellResult:
        """Run one cell (see `Kernel.execute`); a kernel that cannot start ends it as ``crashed``."""
        try:
            kernel = await self.kernel()
        except NBAgentError as exc:
            return CellResult(code=code, status=CellStatus.CRASHED, state_lost=True, note=str(exc))
        return await kernel.execute(code, timeout=timeout_s)

    async def reset(self, *, restart: bool) -> str:
        """Clear the user's variables (`restart`: a fresh kernel process); says what was done."""
        kernel = self._kernel
        if kernel is None:
            return "The kernel has not started yet: there is nothing to clear."
        if restart:
            await kernel.restart()
            return "The kernel was restarted: variables, imports and definitions are gone."
        await kernel.reset()
        return "The variables were cleared (imported modules stay loaded; the workspace's files stay)."

    async def variables(self, timeout_s: float) -> list[dict[str, str]]:
        """The user's variables as ``{"name", "type", "repr"}``, computed in the kernel; `KernelError`
        when the kernel could not list them (it was busy past `timeout_s`, or died)."""
        kernel = await self.kernel()
        result = await kernel.execute(_VARIABLES_CODE, timeout=timeout_s, store_history=False)
        for output in result.outputs:
            if isinstance(output, DisplayData) and VARIABLES_MIME in output.data:
                rows: list[dict[str, str]] = output.data[VARIABLES_MIME]
                return rows
        errors = [f"{o.ename}: {o.evalue}" for o in result.outputs if isinstance(o, ErrorOutput)]
        why = "; ".join(filter(None, [*errors, result.note])) or "no listing came back"
        raise KernelError(f"listing the variables failed ({result.status.value}): {why}")

    async def ask(self, question: str) -> RunResult[str]:
        """Run the agent on `question` in a kernel of its own, in the same workspace."""
        assert self.agent is not None, "the server offers ask_agent only with an agent"
        return await self.agent.run(question)

    async def aclose(self) -> None:
        """Shut the kernel down, close the model, and remove the workspace if it is the server's own.
        Calls after the first do nothing."""
        if self._closed:
            return
        self._closed = True
        kernel, self._kernel = self._kernel, None
        if kernel is not None:
            await kernel.shutdown()
        if self.agent is not None:
            await self.agent.model.aclose()
        if self._own_workspace:
            shutil.rmtree(self.workspace, ignore_errors=True)
