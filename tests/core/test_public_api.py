"""The top-level API: every advertised name resolves, and `import nbagent` stays light."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import nbagent


def test_every_public_name_resolves() -> None:
    missing = [name for name in nbagent.__all__ if getattr(nbagent, name, None) is None]
    assert missing == []


def test_unknown_attribute_raises_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        nbagent.no_such_name  # type: ignore[attr-defined]  # noqa: B018


def test_import_is_light() -> None:
    code = (
        "import sys, json, nbagent, nbagent.tools; "
        "print(json.dumps(sorted(m for m in ('torch', 'transformers', 'trl', 'vllm', 'litellm', "
        "'jupyter_client', 'openai', 'mcp', 'httpx2') if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
