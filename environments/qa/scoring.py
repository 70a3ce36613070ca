"""QA scorers: normalized exact match, token F1, has-answer, and the SimpleQA LLM grader.

Normalization behaves like the official HotpotQA evaluation script: lowercase, drop ASCII punctuation,
drop the articles a/an/the, collapse whitespace. F1 is 0 when either side normalizes to yes, no or
noanswer and the two differ. Every metric takes the maximum over the references.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from nbagent.errors import NBAgentError
from nbagent.trajectory import Reward, SamplingSettings

if TYPE_CHECKING:
    from nbagent.models.base import Model

__all__ = [
    "GraderError",
    "GraderVerdict",
    "SimpleQAGrader",
    "answer_text",
    "exact_match",
    "f1_score",
    "has_answer",
    "normalize_answer",
    "parse_grade",
    "qa_reward",
]

_PUNCTUATION = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_SPECIAL_ANSWERS = ("yes", "no", "noanswer")


def normalize_answer(text: str) -> str:
    """Lowercase, remove punctuation and the articles a/an/the, and collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def answer_text(answer: Any) -> str:
    """The final answer as text (None becomes the empty string, other values their `str`)."""
    return "" if answer is None else str(answer)


def _references(references: str | Iterable[Any]) -> list[str]:
    return [references] if isinstance(references, str) else [str(r) for r in references]


def exact_match(prediction: str, references: str | Iterable[Any]) -> float:
    """1.0 when the normalized prediction equals some normalized reference, else 0.0."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(ref) for ref in _references(references)))


def _f1_single(prediction: str, reference: str) -> float:
    pred, ref = normalize_answer(prediction), normalize_answer(reference)
    if (pred in _SPECIAL_ANSWERS or ref in _SPECIAL_ANSWERS) and pred != ref:
        return 0.0
    common = Counter(pred.split()) & Counter(ref.split())
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(pred.split())
    recall = same / len(ref.split())
    return 2 * precision * recall / (precision + recall)


def f1_score(prediction: str, references: str | Iterable[Any]) -> float:
    """Token F1 of the normalized texts, maximum over references (0.0 when there are none)."""
    return max((_f1_single(prediction, ref) for ref in _references(references)), default=0.0)


def has_answer(prediction: str, references: str | Iterable[Any]) -> float:
    """1.0 when some non-empty normalized reference occurs in the normalized prediction as a whole-token
    run (so "paris" is found in "it is paris france" but "art" is not found in "party")."""
    padded = f" {normalize_answer(prediction)} "
    for ref in _references(references):
        norm = normalize_answer(ref)
        if norm and f" {norm} " in padded:
            return 1.0
    return 0.0


def qa_reward(prediction: str, references: Sequence[Any], *, em_weight: float = 0.9) -> Reward:
    """L0's QA part: ``em_weight * EM + (1 - em_weight) * has-answer``, with EM, F1 and has-answer in
    the breakdown."""
    em = exact_match(prediction, references)
    contained = has_answer(prediction, references)
    f1 = f1_score(prediction, references)
    return Reward(
        total=em_weight * em + (1 - em_weight) * contained,
        breakdown={"exact_match": em, "f1": f1, "has_answer": contained},
    )


# --------------------------------------------------------------------------------------------------
# SimpleQA grader
# --------------------------------------------------------------------------------------------------

Grade = Literal["correct", "incorrect", "not_attempted"]


class GraderError(NBAgentError):
    """The judge model could not be reached or did not answer."""


@dataclass(frozen=True)
class GraderVerdict:
    """The judge's grade and its raw reply."""

    grade: Grade
    raw: str

    def as_breakdown(self) -> dict[str, float]:
        return {
            "judge_correct": float(self.grade == "correct"),
            "judge_incorrect": float(self.grade == "incorrect"),
            "judge_not_attempted": float(self.grade == "not_attempted"),
        }


_GRADER_PROMPT = """You are grading one answer to a factual question against the gold answer.

Choose exactly one grade:
A) CORRECT: the answer states the information of the gold answer and says nothing that contradicts it.
   Wording, capitalization, word order and extra harmless detail do not matter. Hedging is fine as long
   as the gold answer is given. A number must match the gold answer to its last significant figure;
   a name may be shortened when it still clearly identifies the same entity.
B) INCORRECT: the answer states something that contradicts the gold answer, or offers several
   candidates one of which is wrong, even if it is hedged.
C) NOT_ATTEMPTED: the answer does not give the information of the gold answer but does not contradict
   it either (for example "I don't know", a refusal, or a reply that stays too vague).

Question: {question}
Gold answer: {gold}
Answer to grade: {answer}

Reply with a single letter: A, B or C."""

_LETTERS: dict[str, Grade] = {"A": "correct", "B": "incorrect", "C": "not_attempted"}
_WORDS: dict[str, Grade] = {
    "NOT_ATTEMPTED": "not_attempted",
    "INCORRECT": "incorrect",
    "CORRECT": "correct",
}


def parse_grade(reply: str) -> Grade | None:
    """The grade in a judge reply: a standalone letter A/B/C or a grade word; None when absent."""
    letter = re.search(r"\b([ABC])\b", reply)
    if letter:
        return _LETTERS[letter.group(1)]
    upper = reply.upper().replace("NOT ATTEMPTED", "NOT_ATTEMPTED")
    for word, grade in _WORDS.items():
        if word in upper:
            return grade
    return None


class SimpleQAGrader:
    """SimpleQA's three-way LLM grading (correct / incorrect / not attempted) with any chat `Model`.

    A reply without a recognizable grade counts as not attempted (the raw reply is kept in the verdict).
    Use `from_endpoint` for an OpenAI-compatible judge server.
    """

    def __init__(self, model: Model, *, settings: SamplingSettings | None = None) -> None:
        self.model = model
        self.settings = settings or SamplingSettings(temperature=0.0, max_tokens=8)

    @classmethod
    def from_endpoint(
        cls, model: str, base_url: str | None = None, api_key: str | None = None
    ) -> SimpleQAGrader:
        """A grader that calls `model` on an OpenAI-compatible server (the OpenAI API by default)."""
        from nbagent.models.openai import OpenAIModel

        return cls(OpenAIModel(model, base_url=base_url, api_key=api_key))

    async def grade(self, question: str, gold: str, answer: str) -> GraderVerdict:
        """Grade `answer` to `question` against `gold`. Raises `GraderError` when the judge fails."""
        if not answer.strip():
            return GraderVerdict("not_attempted", "")
        prompt = _GRADER_PROMPT.format(question=question, gold=gold, answer=answer)
        try:
            call = await self.model.complete([{"role": "user", "content": prompt}], self.settings)
        except NBAgentError as exc:
            raise GraderError(f"the SimpleQA judge failed: {exc}") from exc
        return GraderVerdict(parse_grade(call.completion) or "not_attempted", call.completion)

    async def aclose(self) -> None:
        await self.model.aclose()
