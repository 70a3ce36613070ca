"""Fixtures of the kernel tests."""

from tests.fixtures.kernels import kernel

__all__ = ["kernel"]
