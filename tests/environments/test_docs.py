"""The examples of docs/environments.md run as written."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "environments.md"


def test_environments_doc_examples_run() -> None:
    blocks = re.findall(
        r"^```python\n(.*?)^```$", DOC.read_text(encoding="utf-8"), flags=re.DOTALL | re.MULTILINE
    )
    assert len(blocks) == 5
    namespace: dict[str, object] = {"__name__": "docs_environments"}
    for index, block in enumerate(blocks):
        exec(compile(block, f"{DOC}:block{index}", "exec"), namespace)
    assert namespace["reward"].total == 1.0  # type: ignore[attr-defined]
    assert len(namespace["hits"]) == 3  # type: ignore[arg-type]
