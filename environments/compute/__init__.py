"""Compute: questions that Python answers exactly (the embedded agent's task set).

``load_environment()`` gives a `ComputeEnvironment`; `templates` generates its split files and
`teacher` records reference episodes for supervised fine-tuning.
"""

from __future__ import annotations

from typing import Any

from .environment import ComputeEnvironment, same_answer

__all__ = ["ComputeEnvironment", "load_environment", "same_answer"]


def load_environment(**kwargs: Any) -> ComputeEnvironment:
    """A `ComputeEnvironment` built from `kwargs` (``data``, ``weights``, ...)."""
    return ComputeEnvironment(**kwargs)
