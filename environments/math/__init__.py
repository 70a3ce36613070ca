"""Math: problems from local files (and a shipped arithmetic set), answers checked with sympy.

``load_environment(dataset="arithmetic")`` gives a `MathEnvironment`; see its docstring.
"""

from __future__ import annotations

from typing import Any

from .checking import answers_equivalent, extract_final_answer
from .environment import ARITHMETIC, MathEnvironment

__all__ = ["ARITHMETIC", "MathEnvironment", "answers_equivalent", "extract_final_answer", "load_environment"]


def load_environment(**kwargs: Any) -> MathEnvironment:
    """A `MathEnvironment` built from `kwargs` (``dataset``, ``weights``, ...)."""
    return MathEnvironment(**kwargs)
