"""Shared pytest configuration. Fixture modules live in tests/fixtures/ and are registered here."""

import signal

pytest_plugins: list[str] = [
    "tests.fixtures.fake_openai",
    "tests.fixtures.kernels",
    "tests.fixtures.tiny_model",
    "tests.fixtures.vllm",
]

# A shell starts background jobs (`cmd &`) with SIGINT ignored, and an ignored signal stays ignored in
# every child: the Ctrl-C tests' subprocesses would never see their SIGINT. Give pytest (and so its
# children) the normal handler back.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
