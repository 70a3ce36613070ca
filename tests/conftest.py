"""Shared pytest configuration. Fixture modules live in tests/fixtures/ and are registered here."""

pytest_plugins: list[str] = []
