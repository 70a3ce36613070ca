"""QA dataset loaders: official release files, the common JSONL form, and the Hugging Face hub.

Every loader returns `TaskSpec`s whose prompt is the bare question, whose references are the accepted
answers, and whose metadata holds ``dataset``, ``question`` and the dataset's useful extra fields. The
row format is recognized from the fields of the first row:

| format | file | fields |
|---|---|---|
| simpleqa | CSV | ``metadata, problem, answer`` |
| bamboogle / generic CSV | CSV | ``Question, Answer`` (any case) |
| hotpotqa | JSON list | ``_id, question, answer, supporting_facts, context, type, level`` |
| 2wikimultihopqa | JSON list | ``_id, question, answer, evidences, supporting_facts, ...`` |
| musique | JSONL | ``id, question, answer, answer_aliases, paragraphs, answerable`` |
| jsonl (FlashRAG) | JSONL | ``id, question, golden_answers[, metadata]`` (also ``answer``/``answers``) |
"""

from __future__ import annotations

import ast
import csv
import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from nbagent.errors import ConfigError
from nbagent.trajectory import TaskSpec

__all__ = [
    "DATA_DIR",
    "HUB_DATASETS",
    "DatasetError",
    "DatasetUnavailableError",
    "detect_format",
    "load_hub_dataset",
    "load_qa_file",
    "rows_to_tasks",
]

DATA_DIR = Path(__file__).parent / "data"

HUB_DATASETS: dict[str, tuple[str, str | None]] = {
    "simpleqa": ("basicv8vc/SimpleQA", None),
    "hotpotqa": ("RUC-NLPIR/FlashRAG_datasets", "hotpotqa"),
    "2wikimultihopqa": ("RUC-NLPIR/FlashRAG_datasets", "2wikimultihopqa"),
    "musique": ("RUC-NLPIR/FlashRAG_datasets", "musique"),
    "bamboogle": ("RUC-NLPIR/FlashRAG_datasets", "bamboogle"),
    "nq": ("RUC-NLPIR/FlashRAG_datasets", "nq"),
    "triviaqa": ("RUC-NLPIR/FlashRAG_datasets", "triviaqa"),
    "popqa": ("RUC-NLPIR/FlashRAG_datasets", "popqa"),
}
"""Known dataset names and where they live on the hub (repository, configuration)."""

ALIASES = {
    "2wiki": "2wikimultihopqa",
    "natural_questions": "nq",
    "trivia_qa": "triviaqa",
    "hotpot_qa": "hotpotqa",
}


class DatasetError(ConfigError):
    """A dataset file is missing, unreadable or in an unknown format."""


class DatasetUnavailableError(DatasetError):
    """A dataset could not be fetched from the Hugging Face hub."""


# --------------------------------------------------------------------------------------------------
# Rows to tasks
# --------------------------------------------------------------------------------------------------


def _question_id(dataset: str, question: str) -> str:
    return f"{dataset}-" + hashlib.sha1(question.strip().encode()).hexdigest()[:12]


def _prefixed(dataset: str, raw_id: Any) -> str:
    text = str(raw_id)
    return text if text.startswith(f"{dataset}-") else f"{dataset}-{text}"


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def _lower_keys(row: Mapping[str, Any]) -> dict[str, Any]:
    return {str(k).strip().lower(): v for k, v in row.items()}


def detect_format(row: Mapping[str, Any]) -> str:
    """The row format of a dataset from the fields of one of its rows."""
    keys = set(_lower_keys(row))
    if {"problem", "answer"} <= keys:
        return "simpleqa"
    if {"_id", "question", "answer"} <= keys and "supporting_facts" in keys:
        return "2wikimultihopqa" if "evidences" in keys else "hotpotqa"
    if {"question", "answer"} <= keys and ({"answer_aliases", "paragraphs"} & keys):
        return "musique"
    if "question" in keys and keys & {"golden_answers", "answers", "answer"}:
        return "jsonl"
    raise DatasetError(
        f"unrecognized QA row with fields {sorted(keys)}; expected one of the formats: SimpleQA CSV "
        "(metadata, problem, answer), HotpotQA/2Wiki JSON (_id, question, answer, supporting_facts), "
        "MuSiQue JSONL (id, question, answer, answer_aliases), or JSONL/CSV with question and "
        "golden_answers (or answer/answers)"
    )


def _simpleqa(row: dict[str, Any], dataset: str) -> TaskSpec:
    question = str(row["problem"])
    meta: Any = row.get("metadata")
    if isinstance(meta, str):
        try:
            meta = ast.literal_eval(meta)
        except (ValueError, SyntaxError):
            meta = {"raw": meta}
    extra = {k: meta[k] for k in ("topic", "answer_type", "urls") if isinstance(meta, dict) and k in meta}
    return _task(_question_id(dataset, question), question, [str(row["answer"])], dataset, extra)


def _hotpot_like(row: dict[str, Any], dataset: str) -> TaskSpec:
    facts = row.get("supporting_facts") or []
    extra: dict[str, Any] = {
        "type": row.get("type"),
        "supporting_titles": sorted({str(f[0]) for f in facts if isinstance(f, list | tuple) and f}),
    }
    if "level" in row:
        extra["level"] = row["level"]
    return _task(_prefixed(dataset, row["_id"]), str(row["question"]), [str(row["answer"])], dataset, extra)


def _musique(row: dict[str, Any], dataset: str) -> TaskSpec:
    answers = [str(row["answer"]), *_as_list(row.get("answer_aliases"))]
    supporting = [
        str(p.get("title", ""))
        for p in row.get("paragraphs") or []
        if isinstance(p, dict) and p.get("is_supporting")
    ]
    extra = {"answerable": bool(row.get("answerable", True)), "supporting_titles": supporting}
    raw_id = row.get("id") or _question_id(dataset, str(row["question"]))
    return _task(_prefixed(dataset, raw_id), str(row["question"]), answers, dataset, extra)


def _generic(row: dict[str, Any], dataset: str) -> TaskSpec:
    low = _lower_keys(row)
    question = str(low["question"])
    answers = _as_list(low.get("golden_answers") or low.get("answers") or low.get("answer"))
    raw_id = low.get("id") or low.get("_id")
    task_id = _prefixed(dataset, raw_id) if raw_id not in (None, "") else _question_id(dataset, question)
    extra = low.get("metadata")
    return _task(task_id, question, answers, dataset, extra if isinstance(extra, dict) else {})


def _task(
    task_id: str, question: str, answers: list[str], dataset: str, extra: Mapping[str, Any]
) -> TaskSpec:
    metadata = {**extra, "dataset": dataset, "question": question}
    return TaskSpec(id=task_id, prompt=question, references=answers, metadata=metadata)


_CONVERTERS = {
    "simpleqa": _simpleqa,
    "hotpotqa": _hotpot_like,
    "2wikimultihopqa": _hotpot_like,
    "musique": _musique,
    "jsonl": _generic,
}


def rows_to_tasks(
    rows: Iterable[Mapping[str, Any]], *, dataset: str | None = None, source: str = "rows"
) -> list[TaskSpec]:
    """Convert dataset rows to tasks; the format is detected from the first row.

    `dataset` names the tasks' dataset (the detected format by default). Repeated ids get a ``-2``,
    ``-3`` ... suffix so ids stay unique. A row missing a field raises `DatasetError` naming it.
    """
    tasks: list[TaskSpec] = []
    seen: dict[str, int] = {}
    fmt: str | None = None
    for n, row in enumerate(rows, start=1):
        if not isinstance(row, Mapping):
            raise DatasetError(f"{source}: row {n} is {type(row).__name__}, expected an object")
        fmt = fmt or detect_format(row)
        try:
            task = _CONVERTERS[fmt](dict(row), dataset or fmt)
        except KeyError as exc:
            raise DatasetError(f"{source}: row {n} ({fmt} format) has no field {exc}") from exc
        if task.id in seen:
            seen[task.id] += 1
            task = task.model_copy(update={"id": f"{task.id}-{seen[task.id]}"})
        else:
            seen[task.id] = 1
        tasks.append(task)
    return tasks


# --------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------


def _read_rows(path: Path) -> list[Any]:
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv"):
            with path.open(encoding="utf-8-sig", newline="") as f:
                return list(csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ","))
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"cannot read dataset file {path}: {exc}") from exc
    if suffix == ".json" or (suffix != ".jsonl" and text.lstrip()[:1] == "["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}: not valid JSON ({exc})") from exc
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list):
            raise DatasetError(f"{path}: expected a JSON list of questions")
        return data
    rows = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}:{line_no}: not valid JSON ({exc.msg})") from exc
    return rows


_STEM_NAMES = {
    "simple_qa_test_set": "simpleqa",
    "hotpot_dev_distractor_v1": "hotpotqa",
    "hotpot_dev_fullwiki_v1": "hotpotqa",
    "hotpot_train_v1.1": "hotpotqa",
}


def load_qa_file(path: str | Path, *, dataset: str | None = None) -> list[TaskSpec]:
    """Load the questions of a dataset file (CSV, JSON or JSONL; the format is detected from its rows).

    `dataset` names the tasks' dataset; by default the detected format, or for generic JSONL/CSV the
    file's stem (``bamboogle.csv`` gives ``bamboogle``).
    """
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"dataset file {p} does not exist")
    rows = _read_rows(p)
    if not rows:
        raise DatasetError(f"dataset file {p} holds no questions")
    if dataset is None:
        fmt = detect_format(rows[0]) if isinstance(rows[0], Mapping) else None
        dataset = _STEM_NAMES.get(p.stem) or (p.stem.lower() if fmt in ("jsonl", None) else fmt)
    return rows_to_tasks(rows, dataset=dataset, source=str(p))


# --------------------------------------------------------------------------------------------------
# Hugging Face hub
# --------------------------------------------------------------------------------------------------


def load_hub_dataset(name: str, *, config: str | None = None) -> dict[str, list[TaskSpec]]:
    """Load a dataset from the Hugging Face hub with `datasets`: a known name (see `HUB_DATASETS`) or
    ``owner/repo``. Returns the tasks of each hub split (``validation`` is renamed ``dev``).

    Raises `DatasetUnavailableError` when `datasets` is missing or the hub cannot be reached.
    """
    key = ALIASES.get(name.lower(), name.lower())
    repo, default_config = HUB_DATASETS.get(key, (name, None))
    config = config or default_config
    where = f"{repo}" + (f" (configuration {config!r})" if config else "")
    try:
        import datasets
    except ImportError as exc:
        raise DatasetUnavailableError(
            f"loading {name!r} from the Hugging Face hub needs the `datasets` package: pip install datasets"
        ) from exc
    try:
        loaded = datasets.load_dataset(repo, config)
    except Exception as exc:  # datasets raises many kinds (connection, offline mode, missing repo)
        raise DatasetUnavailableError(
            f"could not load {name!r} from the Hugging Face hub ({where}): {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}. Without network access, download the "
            "dataset's file (CSV, JSON or JSONL) and pass its path instead."
        ) from exc
    dataset_name = key if key in HUB_DATASETS else repo.rsplit("/", 1)[-1].lower()
    out: dict[str, list[TaskSpec]] = {}
    for split, rows in loaded.items():
        target = "dev" if split == "validation" else str(split)
        out[target] = rows_to_tasks(rows, dataset=dataset_name, source=f"{where} split {split}")
    return out
