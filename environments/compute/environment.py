"""The compute environment: questions that Python answers exactly, scored by value."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any, Unpack

from nbagent.environments import ANSWER_ONLY, BaseEnvironment, EnvironmentOptions
from nbagent.errors import ConfigError
from nbagent.trajectory import Reward, TaskSpec

__all__ = ["DATA", "ComputeEnvironment", "same_answer"]

DATA = Path(__file__).parent / "data"
SPLITS = ("train", "dev", "test")


def _number(text: str) -> Fraction | None:
    cleaned = text.strip().rstrip(".").replace(",", "").replace("_", "")
    try:
        return Fraction(cleaned)
    except (ValueError, ZeroDivisionError):
        return None


def same_answer(answer: Any, reference: str, kind: str, *, rel_tol: float = 1e-6) -> bool:
    """Whether a submitted `answer` is the `reference`: numbers by value (within `rel_tol`, for rounded
    decimals), text exactly up to case, surrounding space and quotes."""
    if answer is None:
        return False
    text = str(answer).strip()
    if kind == "number":
        got, want = _number(text), _number(reference)
        if got is None or want is None:
            return False
        return got == want or abs(got - want) <= Fraction(rel_tol) * max(Fraction(1), abs(want))
    return text.strip("'\"").strip().casefold() == reference.casefold()


def _read(path: Path) -> list[TaskSpec]:
    tasks = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        try:
            row = json.loads(line)
            tasks.append(
                TaskSpec(
                    id=row["id"],
                    prompt=row["question"],
                    references=[row["answer"]],
                    metadata={k: row[k] for k in ("kind", "template", "group", "seen", "solution")},
                )
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path}:{number}: not a compute task row ({exc})") from None
    return tasks


class ComputeEnvironment(BaseEnvironment):
    """Questions that Python answers exactly and a small model cannot answer by itself: arithmetic in
    several phrasings, units and time, dates, counting and strings, number theory, statistics.

    The splits are the shipped files ``data/{train,dev,test}.jsonl`` (made by `templates.py`); the
    test split also holds tasks of templates that no other split has (``metadata["seen"]`` is False),
    so a trained agent's test figures separate generalisation from memory. Each task's metadata names
    its ``template`` and ``group``. The reward is correctness (1 or 0; breakdown key ``correct``).
    """

    name = "compute"

    def __init__(self, data: str | Path = DATA, **options: Unpack[EnvironmentOptions]) -> None:
        options["weights"] = options.get("weights") or ANSWER_ONLY
        super().__init__(**options)
        self.data = Path(data)
        missing = [s for s in SPLITS if not (self.data / f"{s}.jsonl").is_file()]
        if missing:
            raise ConfigError(
                f"compute: {self.data} has no {', '.join(f'{s}.jsonl' for s in missing)}; regenerate them "
                "with `python -m nbagent_environments.compute.templates DIR`"
            )

    def load_tasks(self) -> Mapping[str, Sequence[TaskSpec]]:
        return {split: _read(self.data / f"{split}.jsonl") for split in SPLITS}

    def score_answer(self, answer: Any, task: TaskSpec) -> Reward:
        correct = same_answer(answer, task.references[0], str(task.metadata.get("kind", "number")))
        return Reward(total=float(correct), breakdown={"correct": float(correct)})
