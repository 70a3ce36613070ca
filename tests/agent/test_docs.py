"""The Python examples of docs/agent.md and docs/quickstart.md run as written.

Blocks that talk to the example endpoint (``http://127.0.0.1:8000/v1``) run against the real vLLM
server of the ``vllm_server`` fixture, with its URL and model name substituted; the others run as they
are (they use `ScriptedModel` and a real kernel). Top-level ``await`` is allowed, as in a notebook.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import inspect
import io
import re
import sys
import types
from pathlib import Path
from typing import Any

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
PAGES = ("agent.md", "quickstart.md")
ENDPOINT = "http://127.0.0.1:8000/v1"
EXAMPLE_MODEL = "SmolLM2-135M-Instruct"
_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.DOTALL | re.MULTILINE)


def _blocks(*, endpoint: bool) -> list[Any]:
    found = []
    for page in PAGES:
        text = (DOCS / page).read_text(encoding="utf-8")
        for match in _BLOCK.finditer(text):
            code = match.group(1)
            if (ENDPOINT in code) == endpoint:
                line = text.count("\n", 0, match.start()) + 1
                found.append(pytest.param(code, id=f"{page}:{line}"))
    return found


def _run_block(code: str, name: str = "<doc block>") -> str:
    """Execute a block (top-level await allowed) and return what it printed."""
    compiled = compile(code, name, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    out = io.StringIO()
    # a real module, so dataclasses and type hints defined in the block resolve as in a script
    module = types.ModuleType("__doc_example__")
    sys.modules[module.__name__] = module
    try:
        with contextlib.redirect_stdout(out):
            outcome = eval(compiled, module.__dict__)
            if inspect.iscoroutine(outcome):
                asyncio.run(outcome)
    finally:
        del sys.modules[module.__name__]
    return out.getvalue()


def test_pages_have_examples() -> None:
    assert len(_blocks(endpoint=False)) >= 8
    assert _blocks(endpoint=True)


@pytest.mark.parametrize("code", _blocks(endpoint=False))
def test_doc_example(code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    printed = _run_block(code)
    # every `print(...)  # expected` comment in the block names the start of what that line printed
    expected = [m.group(1) for m in re.finditer(r"^print\(.*\)\s+# ([^\s:]+)", code, re.MULTILINE)]
    for word in expected:
        assert word in printed, f"expected {word!r} in the printed output:\n{printed}"


@pytest.mark.vllm
@pytest.mark.parametrize("code", _blocks(endpoint=True))
def test_doc_example_on_vllm(
    code: str, vllm_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code = code.replace(ENDPOINT, vllm_server.base_url).replace(EXAMPLE_MODEL, vllm_server.served_model_name)
    _run_block(code)
