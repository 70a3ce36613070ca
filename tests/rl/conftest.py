"""RL loop test fixtures: the shared vLLM server, visible here until tests/conftest.py registers it."""

from tests import conftest as _root

if "tests.fixtures.vllm" not in _root.pytest_plugins:
    from tests.fixtures.vllm import vllm_server  # noqa: F401
