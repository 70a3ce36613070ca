"""The Python examples of docs/models.md run as scripts, as a reader would run them.

Blocks that use the example endpoint run against the `vllm_server` fixture (its URL substituted); a
block followed by "prints `...`" must print that text.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from nbagent_train.serving import PolicyServer

PAGE = Path(__file__).resolve().parents[2] / "docs" / "models.md"
ENDPOINT = "http://127.0.0.1:8000/v1"
_BLOCK = re.compile(r"^```python\n(.*?)^```\n(?:\nprints `(?P<prints>[^`]*)`)?", re.DOTALL | re.MULTILINE)


def _blocks() -> list[Any]:
    text = PAGE.read_text(encoding="utf-8")
    params = []
    for match in _BLOCK.finditer(text):
        code = match.group(1)
        line = text.count("\n", 0, match.start()) + 1
        marks = []
        if ENDPOINT in code:
            marks.append(pytest.mark.vllm)
        if "PolicyServer(" in code or "default_local_model" in code:
            marks += [pytest.mark.slow, pytest.mark.timeout(900)]
        if "PolicyServer(" in code:
            marks.append(pytest.mark.vllm)
        params.append(pytest.param(code, match.group("prints"), id=f"models.md:{line}", marks=marks))
    return params


def _run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=800, env=dict(os.environ)
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_the_page_has_examples() -> None:
    assert len(_blocks()) >= 6


@pytest.mark.parametrize(("code", "prints"), _blocks())
def test_example_runs(code: str, prints: str | None, request: pytest.FixtureRequest) -> None:
    if ENDPOINT in code:
        server: PolicyServer = request.getfixturevalue("vllm_server")
        code = code.replace(ENDPOINT, server.base_url).replace(
            "SmolLM2-135M-Instruct", server.served_model_name
        )
    output = _run(code)
    assert output.strip()
    if prints is not None:
        assert " ".join(output.split()) == " ".join(prints.split())
