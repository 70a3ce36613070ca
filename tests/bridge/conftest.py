"""Fixtures of the bridge tests."""

from tests.fixtures.kernels import kernel

__all__ = ["kernel"]
