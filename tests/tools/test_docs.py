"""The examples of docs/tools.md run as written."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "tools.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.DOTALL | re.MULTILINE)


def test_tools_doc_examples_run() -> None:
    blocks = python_blocks(DOC.read_text(encoding="utf-8"))
    assert len(blocks) >= 4
    namespace: dict[str, object] = {"__name__": "docs_tools"}
    for index, block in enumerate(blocks):
        exec(compile(block, f"{DOC}:block{index}", "exec"), namespace)
    assert namespace["census"].calls == 3  # type: ignore[attr-defined]
