"""The math environment: problems from local files, answers checked by sympy equivalence."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Unpack

from nbagent.environments import ANSWER_ONLY, BaseEnvironment, EnvironmentOptions
from nbagent.trajectory import Reward, TaskSpec

from .checking import answers_equivalent
from .loaders import MathDatasetError, load_math_file

__all__ = ["ARITHMETIC", "DEFAULT_PROMPT", "MathEnvironment"]

ARITHMETIC = Path(__file__).parent / "data" / "arithmetic.jsonl"
DEFAULT_PROMPT = "{problem}\n\nGive the final answer as a number or a simplified expression."


class MathEnvironment(BaseEnvironment):
    """Math problems with a checkable answer.

    `dataset` is ``"arithmetic"`` (the shipped set of 200 arithmetic questions, meant to be answered
    by running Python), a JSONL/CSV file of ``{"id","problem","answer"}`` or GSM8K ``question/answer``
    rows, or a mapping of split name to file. The reward is correctness (1 or 0, sympy equivalence);
    by default it is the whole reward. Pass ``weights={"answer": 0.8, "format": 0.1,
    "code_execution": 0.1}`` to add L0's format and code-execution parts.
    """

    name = "math"

    def __init__(
        self,
        dataset: str | Path | Mapping[str, str | Path] = "arithmetic",
        *,
        prompt_template: str = DEFAULT_PROMPT,
        rel_tol: float = 1e-6,
        **options: Unpack[EnvironmentOptions],
    ) -> None:
        options["weights"] = options.get("weights") or ANSWER_ONLY
        super().__init__(**options)
        if "{problem}" not in prompt_template:
            raise MathDatasetError("prompt_template must contain '{problem}'")
        self.prompt_template = prompt_template
        self.rel_tol = rel_tol
        if isinstance(dataset, Mapping):
            self._files: Path | dict[str, Path] = {str(k): Path(v) for k, v in dataset.items()}
        else:
            self._files = ARITHMETIC if str(dataset) == "arithmetic" else Path(dataset)
        for file in self._files.values() if isinstance(self._files, dict) else [self._files]:
            if not file.is_file():
                raise MathDatasetError(
                    f"math task file {file} does not exist; pass 'arithmetic' or a JSONL/CSV file of "
                    "{id, problem, answer} rows"
                )

    def load_tasks(self) -> Sequence[TaskSpec] | Mapping[str, Sequence[TaskSpec]]:
        if isinstance(self._files, dict):
            return {
                split: [self._with_prompt(t) for t in load_math_file(f)] for split, f in self._files.items()
            }
        return [self._with_prompt(t) for t in load_math_file(self._files)]

    def _with_prompt(self, task: TaskSpec) -> TaskSpec:
        return task.model_copy(
            update={"prompt": self.prompt_template.format(problem=task.metadata["problem"])}
        )

    def split_key(self, task: TaskSpec) -> str:
        return " ".join(str(task.metadata.get("problem", task.prompt)).lower().split())

    def score_answer(self, answer: Any, task: TaskSpec) -> Reward:
        correct = any(answers_equivalent(answer, ref, rel_tol=self.rel_tol) for ref in task.references)
        return Reward(total=float(correct), breakdown={"correct": float(correct)})
