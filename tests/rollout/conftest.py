"""Fixtures of the rollout tests (the fake OpenAI server is also meant for tests/conftest.py's plugins)."""

from tests.fixtures.fake_openai import fake_openai_server

__all__ = ["fake_openai_server"]
