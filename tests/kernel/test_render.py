"""render_cell: the observation text (unit tests on hand-made results)."""

from __future__ import annotations

import base64

import pytest

from nbagent.kernel import render_cell, strip_ansi, truncate_middle
from nbagent.trajectory import CellResult, CellStatus, DisplayData, ErrorOutput, ExecuteResult, StreamOutput


def _cell(*outputs: object, status: CellStatus = CellStatus.OK, note: str | None = None) -> CellResult:
    return CellResult(code="x", status=status, outputs=list(outputs), note=note)


def test_ansi_is_stripped_from_streams_and_tracebacks() -> None:
    cell = _cell(
        StreamOutput(name="stdout", text="\x1b[31mred\x1b[0m \x1b]0;title\x07plain\n"),
        ErrorOutput(ename="E", evalue="v", traceback=["\x1b[36mCell\x1b[39m In[1]", "\x1b[31mE\x1b[39m: v"]),
        status=CellStatus.ERROR,
    )
    text = render_cell(cell)
    assert "\x1b" not in text
    assert text == "red plain\nCell In[1]\nE: v"
    assert strip_ansi("\x1b[1;32mok\x1b[0m") == "ok"


def test_carriage_returns_keep_the_last_rewrite() -> None:
    cell = _cell(StreamOutput(name="stdout", text="10%\r50%\r100%\ndone\r\n"))
    assert render_cell(cell) == "100%\ndone"


def test_images_become_placeholders_with_their_size() -> None:
    png = base64.b64encode(b"\x89PNG" + b"\0" * 996).decode()
    cell = _cell(DisplayData(data={"image/png": png, "text/plain": "<Figure size 640x480 with 1 Axes>"}))
    assert (
        render_cell(cell) == "[image/png, 1,000 bytes: kept in trajectory] <Figure size 640x480 with 1 Axes>"
    )


def test_html_only_output_is_a_placeholder() -> None:
    cell = _cell(ExecuteResult(data={"text/html": "<b>hi</b>"}))
    assert render_cell(cell) == "[text/html, 9 characters: kept in trajectory]"


def test_long_output_keeps_head_and_tail_with_a_marker() -> None:
    text = "HEAD" + "x" * 10_000 + "TAIL"
    out = render_cell(_cell(StreamOutput(name="stdout", text=text)), budget_chars=500)
    assert out.startswith("HEAD")
    assert out.endswith("TAIL")
    cut = len(text) - (500 - 80)
    assert f"[... {cut:,} characters cut from the middle of this output ...]" in out
    assert len(out) <= 500


def test_note_is_kept_after_truncation() -> None:
    note = "The cell ran past its timeout of 5 s and was interrupted; the kernel's variables are kept."
    cell = _cell(StreamOutput(name="stdout", text="y" * 10_000), status=CellStatus.TIMEOUT, note=note)
    out = render_cell(cell, budget_chars=600)
    assert out.endswith(f"[timeout] {note}")
    assert "characters cut" in out


def test_empty_ok_cell_renders_empty() -> None:
    assert render_cell(_cell()) == ""


def test_truncate_middle_leaves_short_text_alone() -> None:
    assert truncate_middle("short", 100) == "short"


def test_tiny_budget_is_refused() -> None:
    with pytest.raises(ValueError, match="budget_chars"):
        render_cell(_cell(), budget_chars=10)
