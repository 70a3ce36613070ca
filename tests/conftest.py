"""Shared pytest configuration. Fixture modules live in tests/fixtures/ and are registered here."""

pytest_plugins: list[str] = [
    "tests.fixtures.fake_openai",
    "tests.fixtures.kernels",
    "tests.fixtures.tiny_model",
    "tests.fixtures.vllm",
]
