"""Question answering: SimpleQA, HotpotQA, MuSiQue, Bamboogle, 2Wiki, NQ, TriviaQA, PopQA and the demo set.

``load_environment(dataset="demo")`` gives a `QAEnvironment`; see its docstring for the options.
"""

from __future__ import annotations

from typing import Any

from .environment import DEFAULT_PROMPT, DEMO_CORPUS, DEMO_QUESTIONS, QAEnvironment
from .scoring import SimpleQAGrader

__all__ = ["DEFAULT_PROMPT", "DEMO_CORPUS", "DEMO_QUESTIONS", "QAEnvironment", "load_environment"]


def load_environment(
    *,
    judge_model: str | None = None,
    judge_base_url: str | None = None,
    judge_api_key: str | None = None,
    **kwargs: Any,
) -> QAEnvironment:
    """A `QAEnvironment` built from `kwargs` (``dataset``, ``search``, ``corpus``, ...).

    With `judge_model`, SimpleQA's LLM grader runs on that model at `judge_base_url` (any
    OpenAI-compatible server) and its grade joins the reward breakdown.
    """
    if judge_model is not None:
        kwargs["judge"] = SimpleQAGrader.from_endpoint(
            judge_model, base_url=judge_base_url, api_key=judge_api_key
        )
    return QAEnvironment(**kwargs)
