"""The notepad class on its own (the kernel-side behaviour is tested in test_agent_loop.py)."""

from __future__ import annotations

from typing import Any

import pytest

from nbagent.notepad import Notepad, kernel_setup_code, render_notepad


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


def test_kernel_code_defines_only_notepad() -> None:
    pushed: list[dict[str, Any]] = []
    namespace: dict[str, Any] = {"nbagent_notepad_sync": pushed.append}
    exec(kernel_setup_code({"facts": ["restored"], "todos": [["t", True]], "draft": ""}), namespace)
    assert set(namespace) - {"__builtins__"} == {"nbagent_notepad_sync", "notepad"}
    pad = namespace["notepad"]
    assert pad.render() == "Todo:\n1. [x] t\nFacts:\n- restored"
    pad.add_facts(["new"])
    assert pushed == [{"todos": [["t", True]], "facts": ["restored", "new"], "draft": ""}]
