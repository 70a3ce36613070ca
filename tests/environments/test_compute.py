"""Compute: the generator reproduces the shipped splits, the splits hold out what they promise, scoring,
and the teacher's episodes on a real kernel."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from nbagent.environments import load_environment
from nbagent.errors import ConfigError
from nbagent.trajectory import read_trajectories
from nbagent_environments.compute import ComputeEnvironment, same_answer
from nbagent_environments.compute.environment import DATA
from nbagent_environments.compute.templates import DEMO_QUESTION, TEMPLATES, generate, solve, write


def test_the_shipped_files_are_the_generators_output(tmp_path: Path) -> None:
    write(tmp_path)
    for split in ("train", "dev", "test"):
        assert (tmp_path / f"{split}.jsonl").read_text() == (DATA / f"{split}.jsonl").read_text(), split


def test_splits_are_disjoint_and_unseen_templates_are_only_in_test() -> None:
    env = load_environment("compute")
    questions = {split: {t.prompt for t in env.tasks(split)} for split in ("train", "dev", "test")}
    assert not questions["train"] & questions["dev"]
    assert not questions["train"] & questions["test"]
    assert not questions["dev"] & questions["test"]
    assert DEMO_QUESTION not in set().union(*questions.values())
    assert "What is 17 * 23?" not in set().union(*questions.values())
    train_templates = {t.metadata["template"] for t in env.tasks("train")}
    unseen = {t.name for t in TEMPLATES if not t.seen}
    assert unseen
    assert not unseen & train_templates
    test_templates = {t.metadata["template"] for t in env.tasks("test")}
    assert unseen <= test_templates
    assert {t.name for t in TEMPLATES if t.seen} == train_templates
    assert {t.metadata["group"] for t in env.tasks("test") if not t.metadata["seen"]} == {
        t.group for t in TEMPLATES
    }


def test_every_reference_solution_computes_its_answer() -> None:
    for rows in generate().values():
        for row in rows:
            assert same_answer(solve(row["solution"]), row["answer"], row["kind"]), row


@pytest.mark.parametrize(
    ("answer", "reference", "kind", "expected"),
    [
        (391, "391", "number", True),
        ("391", "391", "number", True),
        (391.0, "391", "number", True),
        ("1,391", "1391", "number", True),
        ("22.4", "22.4", "number", True),
        (22.400000001, "22.4", "number", True),
        ("392", "391", "number", False),
        ("three hundred", "391", "number", False),
        (None, "391", "number", False),
        ("2024-03-15", "2024-03-15", "text", True),
        ("2024-02-16", "2024-03-15", "text", False),
        ("tuesday", "Tuesday", "text", True),
        ("'ananab' ", "ananab", "text", True),
        ("banana", "ananab", "text", False),
        ("x" * 100_000, "391", "number", False),
    ],
)
def test_same_answer(answer: object, reference: str, kind: str, expected: bool) -> None:
    assert same_answer(answer, reference, kind) is expected


def test_a_missing_or_corrupt_data_folder_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no train\.jsonl, dev\.jsonl, test\.jsonl"):
        ComputeEnvironment(data=tmp_path)
    for split in ("train", "dev", "test"):
        (tmp_path / f"{split}.jsonl").write_text(json.dumps({"id": "x"}) + "\n")
    with pytest.raises(ConfigError, match=r"train\.jsonl:1: not a compute task row"):
        ComputeEnvironment(data=tmp_path).tasks("train")


@pytest.mark.slow
def test_teacher_episodes_run_the_solution_then_submit_on_a_real_kernel(tmp_path: Path) -> None:
    from nbagent_environments.compute.teacher import SUBMIT, record

    out = tmp_path / "teacher.jsonl"
    summary = asyncio.run(record(out, split="dev", concurrency=2))
    episodes = list(read_trajectories(out))
    assert summary.written == len(episodes) == len(ComputeEnvironment().tasks("dev"))
    assert all(t.reward is not None and t.reward.total == 1.0 for t in episodes)
    first = episodes[0]
    assert [s.model_call.completion for s in first.steps][-1] == SUBMIT
    assert first.task.references[0] in first.steps[0].observation
    assert all(s.model_call.completion_token_ids for t in episodes for s in t.steps)  # real ids, for sft
