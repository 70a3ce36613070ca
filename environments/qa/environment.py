"""The QA environment: one environment, many datasets, L0's reward, offline or web search tools."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Unpack

from nbagent.environments import BaseEnvironment, EnvironmentOptions
from nbagent.tools import Tool
from nbagent.trajectory import Reward, TaskSpec

from .loaders import (
    ALIASES,
    DATA_DIR,
    HUB_DATASETS,
    DatasetError,
    load_hub_dataset,
    load_qa_file,
)
from .scoring import SimpleQAGrader, answer_text, qa_reward
from .search import WebSearch
from .tools import corpus_search_tool, read_webpage_tool, web_search_tool

__all__ = ["DEFAULT_PROMPT", "DEMO_CORPUS", "DEMO_QUESTIONS", "QAEnvironment"]

DEMO_CORPUS = DATA_DIR / "demo_corpus.jsonl"
DEMO_QUESTIONS = DATA_DIR / "demo_questions.jsonl"
DEFAULT_PROMPT = "{question}\n\nAnswer the question in a word or a short phrase."

SearchMode = Literal["auto", "corpus", "web", "none"]
_FILE_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl")


class QAEnvironment(BaseEnvironment):
    """Question answering with verifiable answers.

    `dataset` is ``"demo"`` (the shipped offline set), a file path (SimpleQA CSV, HotpotQA/2Wiki JSON,
    MuSiQue or FlashRAG-style JSONL, Bamboogle CSV), a known name loaded from the Hugging Face hub
    (``simpleqa``, ``hotpotqa``, ``2wikimultihopqa``, ``musique``, ``bamboogle``, ``nq``, ``triviaqa``,
    ``popqa``), ``"hf:owner/repo"``, or a mapping of split name to file (official splits).

    `search` picks the tools: ``"corpus"`` (BM25 over `corpus`, the demo corpus for the demo set),
    ``"web"`` (`web_search` through `search_provider`, and `read_webpage`), ``"none"``, or ``"auto"``
    (corpus when one is known, else web). The `tools` option adds tools of your own; the other options
    are those of `EnvironmentOptions`.

    The reward is L0's: ``weights.answer * QA + weights.format * format + weights.code_execution *
    code-execution``, with QA = ``em_weight * EM + (1 - em_weight) * has-answer``. The breakdown also
    carries exact_match, f1 and has_answer, and the judge's one-hot grade when a `judge` is set.
    """

    name = "qa"

    def __init__(
        self,
        dataset: str | Path | Mapping[str, str | Path] = "demo",
        *,
        search: SearchMode = "auto",
        corpus: str | Path | None = None,
        search_provider: str = "serper",
        search_base_url: str | None = None,
        search_api_key_env: str | None = None,
        prompt_template: str = DEFAULT_PROMPT,
        em_weight: float = 0.9,
        judge: SimpleQAGrader | None = None,
        hub_config: str | None = None,
        **options: Unpack[EnvironmentOptions],
    ) -> None:
        super().__init__(**options)
        if "{question}" not in prompt_template:
            raise DatasetError("prompt_template must contain '{question}'")
        self.dataset = dataset
        self.prompt_template = prompt_template
        self.em_weight = em_weight
        self.judge = judge
        self.hub_config = hub_config
        self._source = self._resolve(dataset)
        if corpus is None and dataset == "demo":
            corpus = DEMO_CORPUS
        if search == "auto":
            search = "corpus" if corpus is not None else "web"
        if search == "corpus" and corpus is None:
            raise DatasetError(
                "search='corpus' needs corpus=PATH, a JSONL file of {id, title, text} passages"
            )
        self.search: SearchMode = search
        self.corpus = Path(corpus) if corpus is not None else None
        self.web_search = WebSearch(search_provider, base_url=search_base_url, api_key_env=search_api_key_env)
        self._built_tools: list[Tool] | None = None

    # -- tasks --------------------------------------------------------------------------------------

    @staticmethod
    def _resolve(dataset: str | Path | Mapping[str, str | Path]) -> tuple[str, Any]:
        """What to load, checked early so a typo fails at construction: (kind, argument)."""
        if isinstance(dataset, Mapping):
            for split, file in dataset.items():
                if not Path(file).is_file():
                    raise DatasetError(f"dataset file for split {split!r} does not exist: {file}")
            return "splits", {str(k): Path(v) for k, v in dataset.items()}
        text = str(dataset)
        if text == "demo":
            return "file", (DEMO_QUESTIONS, "demo")
        if Path(text).is_file():
            return "file", (Path(text), None)
        if text.startswith("hf:"):
            return "hub", text[3:]
        if text.lower() in HUB_DATASETS or text.lower() in ALIASES:
            return "hub", text
        if text.lower().endswith(_FILE_SUFFIXES):
            raise DatasetError(f"dataset file {text} does not exist")
        raise DatasetError(
            f"unknown dataset {text!r}: not a file, and not a known name. Known names (loaded from the "
            f"Hugging Face hub): demo, {', '.join(HUB_DATASETS)}; or pass a CSV/JSON/JSONL file, or "
            "'hf:owner/repo'"
        )

    def load_tasks(self) -> Sequence[TaskSpec] | Mapping[str, Sequence[TaskSpec]]:
        kind, arg = self._source
        loaded: list[TaskSpec] | dict[str, list[TaskSpec]]
        if kind == "file":
            path, name = arg
            loaded = load_qa_file(path, dataset=name)
        elif kind == "splits":
            loaded = {split: load_qa_file(path) for split, path in arg.items()}
        else:
            hub = load_hub_dataset(arg, config=self.hub_config)
            # one release split (e.g. SimpleQA's test set) is re-split; several are used as they are
            loaded = next(iter(hub.values())) if len(hub) == 1 else hub
        if isinstance(loaded, dict):
            return {split: [self._with_prompt(t) for t in tasks] for split, tasks in loaded.items()}
        return [self._with_prompt(t) for t in loaded]

    def _with_prompt(self, task: TaskSpec) -> TaskSpec:
        return task.model_copy(
            update={"prompt": self.prompt_template.format(question=task.metadata["question"])}
        )

    def split_key(self, task: TaskSpec) -> str:
        return " ".join(str(task.metadata.get("question", task.prompt)).lower().split())

    # -- tools --------------------------------------------------------------------------------------

    def tools(self) -> list[Tool]:
        if self._built_tools is None:
            built: list[Tool] = []
            if self.search == "corpus":
                assert self.corpus is not None
                built.append(corpus_search_tool(self.corpus))
            elif self.search == "web":
                built += [web_search_tool(self.web_search), read_webpage_tool()]
            self._built_tools = built
        return self._built_tools + super().tools()

    # -- reward -------------------------------------------------------------------------------------

    async def score_answer(self, answer: Any, task: TaskSpec) -> Reward:
        text = answer_text(answer)
        reward = qa_reward(text, task.references, em_weight=self.em_weight)
        if self.judge is None:
            return reward
        question = str(task.metadata.get("question", task.prompt))
        verdict = await self.judge.grade(question, " / ".join(map(str, task.references)), text)
        return reward.model_copy(update={"breakdown": {**reward.breakdown, **verdict.as_breakdown()}})
