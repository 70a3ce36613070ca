"""Train and eval splits are disjoint by construction, deterministic, and respect official splits."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from nbagent.environments import (
    DEFAULT_SPLITS,
    SimpleEnvironment,
    UnknownSplitError,
    assign_split,
    split_tasks,
)
from nbagent.errors import ConfigError
from nbagent.trajectory import TaskSpec
from nbagent_environments.math import MathEnvironment
from nbagent_environments.qa import QAEnvironment


def _tasks(n: int) -> list[TaskSpec]:
    return [TaskSpec(id=f"t{i}", prompt=f"question number {i}", references=["x"]) for i in range(n)]


def _check_partition(env_tasks: dict[str, list[TaskSpec]], everything: list[TaskSpec]) -> None:
    ids = [t.id for tasks in env_tasks.values() for t in tasks]
    assert len(ids) == len(set(ids)), "a task is in two splits"
    assert set(ids) == {t.id for t in everything}, "a task is in no split"


def test_hash_split_partitions_and_is_deterministic() -> None:
    tasks = _tasks(2000)
    first = split_tasks(tasks)
    _check_partition(first, tasks)
    assert split_tasks(list(reversed(tasks))) == {k: list(reversed(v)) for k, v in first.items()}
    counts = {k: len(v) for k, v in first.items()}
    assert 1450 < counts["train"] < 1750
    assert 120 < counts["dev"] < 280
    assert 120 < counts["test"] < 280
    assert split_tasks(tasks, seed="other") != first


def test_same_question_under_two_ids_shares_a_split() -> None:
    tasks = [TaskSpec(id=f"a{i}", prompt=f"Q {i}") for i in range(300)]
    tasks += [TaskSpec(id=f"b{i}", prompt=f"  q   {i} ") for i in range(300)]
    env = SimpleEnvironment("dupes", tasks, lambda a, t: 0.0)
    train = {t.prompt.lower().split()[1] for t in env.tasks("train")}
    held_out = {t.prompt.lower().split()[1] for s in ("dev", "test") for t in env.tasks(s)}
    assert train
    assert held_out
    assert not train & held_out


def test_assign_split_respects_fractions_and_rejects_bad_ones() -> None:
    assert {assign_split(str(i), {"only": 1.0}) for i in range(50)} == {"only"}
    assert Counter(assign_split(str(i), {"a": 1.0, "b": 0.0}) for i in range(200)) == {"a": 200}
    with pytest.raises(ConfigError):
        assign_split("x", {"a": -1.0, "b": 2.0})
    with pytest.raises(ConfigError, match="reserved"):
        assign_split("x", {"all": 1.0})


def test_unknown_split_names_the_choices() -> None:
    env = SimpleEnvironment("s", _tasks(10), lambda a, t: 0.0)
    with pytest.raises(UnknownSplitError, match="train, dev, test, all"):
        env.tasks("validation")


def test_official_splits_drop_train_tasks_that_occur_in_eval() -> None:
    train = _tasks(10)
    test = [TaskSpec(id="other-id", prompt="QUESTION number 3"), TaskSpec(id="new", prompt="fresh")]
    env = SimpleEnvironment("official", {"train": train, "test": test}, lambda a, t: 0.0)
    assert [t.id for t in env.tasks("test")] == ["other-id", "new"]
    assert "t3" not in {t.id for t in env.tasks("train")}
    assert len(env.tasks("train")) == 9
    assert env.dropped_overlap == 1
    assert len(env.tasks("all")) == 11


def test_demo_qa_splits_are_disjoint_and_cover_every_question() -> None:
    env = QAEnvironment("demo")
    splits = {name: list(env.tasks(name)) for name in DEFAULT_SPLITS}
    _check_partition(splits, list(env.tasks("all")))
    assert len(env.tasks("all")) == 50
    assert all(splits.values())
    questions = {n: {t.metadata["question"] for t in tasks} for n, tasks in splits.items()}
    assert not questions["train"] & (questions["dev"] | questions["test"])


def test_qa_split_ignores_the_prompt_template() -> None:
    plain = QAEnvironment("demo", prompt_template="{question}")
    fancy = QAEnvironment("demo", prompt_template="Please answer: {question} (short)")
    assert [t.id for t in plain.tasks("test")] == [t.id for t in fancy.tasks("test")]
    assert fancy.tasks("test")[0].prompt.startswith("Please answer: ")


def test_qa_official_split_files(fixtures_dir: Path, tmp_path: Path) -> None:
    train_file = tmp_path / "train.jsonl"
    # one training question repeats an eval question under another id: it must leave train
    train_file.write_text(
        '{"id": "tr1", "question": "What colour is the roof of the fictional Brackwater station", '
        '"golden_answers": ["green"]}\n{"id": "tr2", "question": "A training-only question", '
        '"golden_answers": ["yes"]}\n'
    )
    env = QAEnvironment({"train": train_file, "test": fixtures_dir / "nq_test.jsonl"}, search="none")
    assert [t.id for t in env.tasks("train")] == ["train-tr2"]
    assert len(env.tasks("test")) == 3


def test_math_splits_are_disjoint() -> None:
    env = MathEnvironment()
    splits = {name: list(env.tasks(name)) for name in DEFAULT_SPLITS}
    _check_partition(splits, list(env.tasks("all")))
    assert len(env.tasks("all")) == 200
