"""Until tests/conftest.py registers `tests.fixtures.vllm` as a plugin, make its fixture visible here."""

from tests import conftest as _root

if "tests.fixtures.vllm" not in _root.pytest_plugins:
    from tests.fixtures.vllm import vllm_server  # noqa: F401
