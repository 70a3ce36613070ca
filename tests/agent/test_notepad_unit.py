"""The notepad class on its own (the kernel-side behaviour is tested in test_agent_loop.py)."""

from __future__ import annotations

import ast
import contextlib
import io
from typing import Any

import pytest

from nbagent.agent.notepad import Notepad, ReservedNamesGuard, kernel_setup_code, render_notepad


def test_methods_render_and_sync() -> None:
    pushed: list[dict[str, Any]] = []
    pad = Notepad(on_change=pushed.append)
    assert pad.render() == ""
    assert repr(pad) == "(the notepad is empty)"
    pad.add_todo(["find x", "check x"])
    pad.add_todo("submit")
    pad.mark_done(1)
    pad.add_facts("x = 3 (computed)")
    pad.write_draft("x is 3")
    assert pad.render() == (
        "Todo:\n1. [x] find x\n2. [ ] check x\n3. [ ] submit\nFacts:\n- x = 3 (computed)\nDraft:\nx is 3"
    )
    assert len(pushed) == 5
    assert pushed[-1] == pad.state()
    assert Notepad(pad.state()).render() == pad.render()


def test_mark_done_bad_number() -> None:
    pad = Notepad()
    pad.add_todo("a")
    with pytest.raises(IndexError, match="No todo item number 2: the list has items 1 to 1"):
        pad.mark_done(2)
    assert pad.todos == (("a", False),)


def test_contents_are_read_only_views() -> None:
    pad = Notepad({"facts": ["f"]})
    with pytest.raises(AttributeError):
        pad.facts.append("g")  # type: ignore[attr-defined]


def test_render_budget() -> None:
    text = render_notepad({"facts": ["z" * 100]}, max_chars=20)
    assert text.startswith("Facts:\n- zzz")
    assert text.endswith("more characters not shown]")


def guarded(code: str) -> tuple[str, str]:
    """Run `code` through the guard; return the code left and what it writes on stderr."""
    tree = ReservedNamesGuard(["submit_final_answer", "notepad"]).visit(ast.parse(code))
    ast.fix_missing_locations(tree)
    err = io.StringIO()
    namespace: dict[str, Any] = {"submit_final_answer": lambda a: f"real {a}"}
    with contextlib.redirect_stderr(err):
        exec(compile(tree, "<cell>", "exec"), namespace)
    return ast.unparse(tree), err.getvalue()


def test_guard_drops_rebinding_of_reserved_names_and_says_so() -> None:
    code = "def submit_final_answer(a):\n    return 'fake'\nx = submit_final_answer(3)\nprint(x)"
    left, err = guarded(code)
    assert "def submit_final_answer" not in left
    assert "x = submit_final_answer(3)" in left
    assert err == (
        "[nbagent] line 1 was not run: submit_final_answer is provided by the agent and cannot be "
        "redefined; call it directly, e.g. submit_final_answer(...).\n"
    )
    for rebind in ("notepad = 3", "import math as notepad", "class notepad: pass", "notepad, y = 1, 2"):
        left, err = guarded(rebind)
        assert "notepad" in err
        assert "was not run" in err


def test_guard_keeps_everything_else() -> None:
    code = "def helper(submit_final_answer):\n    return submit_final_answer\ny = helper(2)\nnotepad2 = 1"
    left, err = guarded(code)
    assert err == ""
    assert left == ast.unparse(ast.parse(code))


def test_setup_code_compiles_and_names_the_reserved() -> None:
    code = kernel_setup_code({"facts": ["restored"]}, reserved=["submit_final_answer", "notepad"])
    compile(code, "<setup>", "exec")
    assert "['submit_final_answer', 'notepad']" in code
    assert "{'facts': ['restored']}" in code
