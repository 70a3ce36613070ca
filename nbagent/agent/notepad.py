"""Kernel-side set-up of the agent: the `notepad`, and a guard that keeps the agent's names intact.

The notepad is a todo list, facts and a draft answer that live in the kernel as `notepad`.

The model edits it from its code (``notepad.add_todo([...])``, ``notepad.mark_done(1)``,
``notepad.add_facts([...])``, ``notepad.write_draft(text)``). Every change is pushed to the host through
the tool bridge (a hidden host tool), so the host always holds the current state without running extra
cells, and can put it back after a kernel restart. The host renders it at the end of each prompt.

Small models often write ``def submit_final_answer(...)`` before calling it, which would cut the episode's
only way to answer. `ReservedNamesGuard` (an IPython AST transformer) drops such top-level definitions and
assignments of the agent's names before a cell runs, and the cell prints a line on stderr saying so.

`Notepad` and `ReservedNamesGuard` are self-contained (standard library only): their source is what the
kernel runs.
"""

from __future__ import annotations

import ast
import functools
import inspect
from collections.abc import Callable
from typing import Any

SYNC_TOOL_NAME = "nbagent_notepad_sync"
"""The hidden host tool the kernel's notepad calls with its new state after every change."""


class Notepad:
    """Todo list, facts and a draft answer. Change it only through its methods; print it to see it."""

    def __init__(
        self,
        state: dict[str, Any] | None = None,
        on_change: Callable[[dict[str, Any]], object] | None = None,
    ) -> None:
        state = state or {}
        self._todos: list[list[Any]] = [[str(t), bool(d)] for t, d in state.get("todos", [])]
        self._facts: list[str] = [str(f) for f in state.get("facts", [])]
        self._draft: str = str(state.get("draft", ""))
        self._on_change = on_change

    @property
    def todos(self) -> tuple[tuple[str, bool], ...]:
        """The todo items as (text, done) pairs, numbered from 1 in the rendering."""
        return tuple((t, d) for t, d in self._todos)

    @property
    def facts(self) -> tuple[str, ...]:
        return tuple(self._facts)

    @property
    def draft(self) -> str:
        return self._draft

    def add_todo(self, items: str | list[str]) -> None:
        """Add one item or a list of items to the todo list."""
        self._todos.extend([str(item), False] for item in _as_list(items))
        self._changed()

    def mark_done(self, *numbers: int) -> None:
        """Mark todo items done by their number (1 is the first item)."""
        for n in numbers:
            if not isinstance(n, int) or not 1 <= n <= len(self._todos):
                raise IndexError(f"No todo item number {n!r}: the list has items 1 to {len(self._todos)}.")
        for n in numbers:
            self._todos[n - 1][1] = True
        self._changed()

    def add_facts(self, facts: str | list[str]) -> None:
        """Record one fact or a list of facts (say where each comes from)."""
        self._facts.extend(str(f) for f in _as_list(facts))
        self._changed()

    def write_draft(self, text: str) -> None:
        """Replace the draft answer."""
        self._draft = str(text)
        self._changed()

    def state(self) -> dict[str, Any]:
        """A JSON-serializable copy of the contents."""
        return {"todos": [list(t) for t in self._todos], "facts": list(self._facts), "draft": self._draft}

    def render(self) -> str:
        """The text shown to the model; empty when the notepad is empty."""
        parts: list[str] = []
        if self._todos:
            lines = [f"{i}. [{'x' if done else ' '}] {text}" for i, (text, done) in enumerate(self._todos, 1)]
            parts.append("Todo:\n" + "\n".join(lines))
        if self._facts:
            parts.append("Facts:\n" + "\n".join(f"- {fact}" for fact in self._facts))
        if self._draft:
            parts.append("Draft:\n" + self._draft)
        return "\n".join(parts)

    def __repr__(self) -> str:
        return self.render() or "(the notepad is empty)"

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self.state())


def _as_list(items: str | list[str]) -> list[str]:
    return [items] if isinstance(items, str) else list(items)


class ReservedNamesGuard(ast.NodeTransformer):
    """Drops top-level statements that would rebind the agent's names (def, class, assignment, import)."""

    def __init__(self, names: list[str]) -> None:
        self.names = set(names)

    def _rebinds(self, node: ast.stmt) -> list[str]:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound = [node.name]
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            bound = [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]
        elif isinstance(node, ast.Import | ast.ImportFrom):
            bound = [alias.asname or alias.name.split(".")[0] for alias in node.names]
        else:
            bound = []
        return sorted(self.names.intersection(bound))

    def visit_Module(self, node: ast.Module) -> ast.Module:
        body: list[ast.stmt] = []
        for stmt in node.body:
            clashes = self._rebinds(stmt)
            if not clashes:
                body.append(stmt)
                continue
            names = ", ".join(clashes)
            message = (
                f"[nbagent] line {stmt.lineno} was not run: {names} is provided by the agent and cannot be "
                f"redefined; call it directly, e.g. {clashes[0]}(...)."
            )
            body.extend(ast.parse(f"__import__('sys').stderr.write({message + chr(10)!r})").body)
        node.body = body
        return node


KERNEL_MODULE = "_nbagent_notepad"
"""The kernel-side module that holds the notepad classes (loaded once per kernel process)."""


@functools.cache
def kernel_source() -> str:
    """The source of `KERNEL_MODULE`: the classes the kernel runs (read once: `inspect.getsource` is
    slow). Load it with ``kernel.ensure_module(KERNEL_MODULE, kernel_source())``."""
    return (
        "from __future__ import annotations\n"
        "import ast\n"
        "from collections.abc import Callable\n"
        "from typing import Any\n\n"
        + "\n".join(inspect.getsource(obj) for obj in (_as_list, Notepad, ReservedNamesGuard))
    )


def kernel_setup_code(state: dict[str, Any] | None, reserved: list[str]) -> str:
    """Python for the kernel that defines `notepad` (restored from `state`, synced through the bridge)
    and installs the guard of the `reserved` names (replacing a guard installed before).

    The classes come from the module `KERNEL_MODULE`, which must be loaded already (see
    `kernel_source`), so the user's namespace only gains `notepad`; the bridge stub
    `nbagent_notepad_sync` must be defined already too.
    """
    return (
        "def _nbagent_setup():\n"
        f"    ns = __import__({KERNEL_MODULE!r}).__dict__\n"
        "    shell = get_ipython()\n"
        f"    shell.user_ns['notepad'] = ns['Notepad']({state or {}!r}, on_change={SYNC_TOOL_NAME})\n"
        "    kept = [t for t in shell.ast_transformers if type(t).__name__ != 'ReservedNamesGuard']\n"
        f"    shell.ast_transformers[:] = [*kept, ns['ReservedNamesGuard']({reserved!r})]\n"
        "_nbagent_setup()\n"
        "del _nbagent_setup\n"
    )


def render_notepad(state: dict[str, Any] | None, max_chars: int = 4000) -> str:
    """Render a notepad state on the host, keeping at most `max_chars` (the end is cut with a marker)."""
    text = Notepad(state).render()
    if len(text) > max_chars:
        cut = len(text) - max_chars
        text = text[:max_chars] + f"\n[... notepad cut: {cut} more characters not shown]"
    return text
