"""The Python examples of docs/kernel.md run as written and print what their comments say.

A ``print(...)  # text`` line must print a line starting with ``text``, in order.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from nbagent.kernel import launch

DOC = Path(__file__).resolve().parents[2] / "docs" / "kernel.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.DOTALL | re.MULTILINE)
_EXPECTED = re.compile(r"^\s*print\(.*\)\s+# (.+)$", re.MULTILINE)
_FORKING = pytest.mark.skipif(launch.bwrap_unusable() is not None, reason=str(launch.bwrap_unusable()))


def _blocks() -> list[object]:
    text = DOC.read_text(encoding="utf-8")
    return [
        pytest.param(
            m.group(1),
            id=f"kernel.md:{text.count(chr(10), 0, m.start()) + 1}",
            marks=[_FORKING] if 'start="fork"' in m.group(1) else [],
        )
        for m in _BLOCK.finditer(text)
    ]


def test_page_has_examples() -> None:
    assert len(_blocks()) >= 3


@pytest.mark.parametrize("code", _blocks())
def test_doc_example(code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "<docs/kernel.md>", "exec"), {"__name__": "__doc_example__"})
    printed = out.getvalue().splitlines()
    expected = _EXPECTED.findall(code)
    assert expected
    lines = iter(printed)
    for start in expected:  # in order, each comment starts one of the printed lines
        assert any(line.startswith(start) for line in lines), f"no line starting {start!r} in {printed}"
