"""Fixtures of the rollout tests: visible here until tests/conftest.py registers their modules as plugins."""

from tests import conftest as _root

if "tests.fixtures.fake_openai" not in _root.pytest_plugins:
    from tests.fixtures.fake_openai import fake_openai_server  # noqa: F401
if "tests.fixtures.vllm" not in _root.pytest_plugins:
    from tests.fixtures.vllm import vllm_server  # noqa: F401
