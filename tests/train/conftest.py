"""Fixtures of the trainer tests: the tiny model and tokenizer from tests/fixtures/tiny_model.py."""

from __future__ import annotations

from tests.fixtures.tiny_model import tiny_model_dir, tiny_tokenizer

__all__ = ["tiny_model_dir", "tiny_tokenizer"]
