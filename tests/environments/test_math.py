"""Math: answer equivalence, task files, the shipped arithmetic set, and scoring an episode."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from nbagent.trajectory import CellStatus, TaskSpec
from nbagent_environments.math import ARITHMETIC, MathEnvironment, answers_equivalent, extract_final_answer
from nbagent_environments.math.checking import parse_number, to_sympy
from nbagent_environments.math.loaders import MathDatasetError, load_math_file
from tests.fixtures.trajectories import step, trajectory


@pytest.mark.parametrize(
    ("prediction", "reference"),
    [
        ("42", "42"),
        ("42.0", "42"),
        (" 42. ", "42"),
        ("1,234", "1234"),
        ("$1,234.50", "1234.5"),
        ("50%", "0.5"),
        ("3/4", "0.75"),
        ("\\frac{3}{4}", "0.75"),
        ("\\dfrac{3}{4}", "3/4"),
        ("\\frac12", "1/2"),
        ("\\boxed{\\frac{1}{2}}", "0.5"),
        ("So the answer is $\\boxed{7}$.", "7"),
        ("The answer is 7.", "7"),
        ("#### 72", "72"),
        ("2\\sqrt{2}", "\\sqrt{8}"),
        ("\\frac{\\sqrt{2}}{2}", "1/sqrt(2)"),
        ("x^2+2x+1", "(x+1)^2"),
        ("2\\pi", "\\pi \\cdot 2"),
        ("x = 3", "3"),
        ("1, 2, 3", "1,2,3"),
        ("\\sin(\\pi/2)", "1"),
        ("\\left(1+2\\right)", "3"),
        ("1.0000001", "1"),
    ],
)
def test_equivalent(prediction: str, reference: str) -> None:
    assert answers_equivalent(prediction, reference)


@pytest.mark.parametrize(
    ("prediction", "reference"),
    [
        ("41", "42"),
        ("0.333", "1/3"),  # rounded too coarsely
        ("x^2+1", "(x+1)^2"),
        ("1, 2", "1, 2, 3"),
        ("", "0"),
        (None, "0"),
        ("apples", "1"),
        ("42 or 43", "42"),
    ],
)
def test_not_equivalent(prediction: str | None, reference: str) -> None:
    assert not answers_equivalent(prediction, reference)


@pytest.mark.parametrize(
    "hostile",
    [
        "__import__('os').system('echo hi')",
        "9^(9^(9^9))",
        "10**100000",
        "open('x')",
        "a" * 300,
        "x" * 2 + "()",
    ],
)
def test_unsafe_input_never_reaches_sympy(hostile: str) -> None:
    assert to_sympy(hostile) is None
    assert not answers_equivalent(hostile, "1")


def test_extract_and_parse_helpers() -> None:
    assert extract_final_answer("work... \\boxed{a} then \\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert extract_final_answer("She has 31 left.\n#### 31") == "31"
    assert extract_final_answer("\\(x+1\\)") == "x+1"
    assert parse_number("1,234,567") == 1234567
    assert parse_number("12%") * 100 == 12
    assert parse_number("1,2") is None


def test_load_math_files(fixtures_dir: Path, tmp_path: Path) -> None:
    gsm = load_math_file(fixtures_dir / "gsm8k_test.jsonl", dataset="gsm8k")
    assert [t.references for t in gsm] == [["31"], ["336"]]
    assert gsm[0].metadata["solution"].endswith("#### 31")
    assert gsm[0].id.startswith("gsm8k-")
    csv_tasks = load_math_file(fixtures_dir / "math_problems.csv")
    assert [t.id for t in csv_tasks] == ["math_problems-half", "math_problems-square", "math_problems-root"]
    assert csv_tasks[0].references == ["\\frac{1}{2}"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "1+1"}\n')
    with pytest.raises(MathDatasetError, match="needs 'problem' \\(or 'question'\\) and 'answer'"):
        load_math_file(bad)
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"id": 1, "problem": "a", "answer": 1}\n{"id": 1, "problem": "b", "answer": 2}\n')
    with pytest.raises(MathDatasetError, match="task ids repeat"):
        load_math_file(dup)
    with pytest.raises(MathDatasetError, match="does not exist"):
        MathEnvironment(tmp_path / "none.jsonl")


def test_shipped_arithmetic_set_is_correct_and_regenerates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [json.loads(line) for line in ARITHMETIC.read_text().splitlines()]
    assert len(rows) == 200
    for row in rows:  # re-derive every answer from the question text with Python itself
        expr = (
            row["problem"]
            .removeprefix("What is ")
            .rstrip("?")
            .replace(" divided by ", " // ")
            .replace(" to the power of ", " ** ")
        )
        if expr.startswith("the sum of all integers from "):
            a, b = expr.removeprefix("the sum of all integers from ").removesuffix(" inclusive").split(" to ")
            value = sum(range(int(a), int(b) + 1))
        else:
            assert set(expr) <= set("0123456789+-*/() "), expr
            value = eval(expr)  # digits and operators only, checked above
        assert str(value) == row["answer"], row
    spec = importlib.util.spec_from_file_location("make_arithmetic", ARITHMETIC.parent / "make_arithmetic.py")
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "make_arithmetic", module)
    spec.loader.exec_module(module)
    assert module.generate(tmp_path).read_bytes() == ARITHMETIC.read_bytes()


async def test_math_environment_scores_an_episode() -> None:
    env = MathEnvironment()
    task = env.tasks("test")[0]
    assert task.prompt.startswith(task.metadata["problem"])
    answer = task.references[0]
    steps = [step(0, "Compute it with Python directly.", "print(6 * 7)", CellStatus.OK)]
    right = await env.score(trajectory(task, steps, answer))
    assert right.total == 1.0
    assert right.breakdown["correct"] == 1.0
    wrong = await env.score(trajectory(task, steps, str(int(answer) + 1)))
    assert wrong.total == 0.0
    as_number = await env.score(trajectory(task, steps, int(answer)))  # a non-string final answer
    assert as_number.total == 1.0

    l0 = MathEnvironment(weights={"answer": 0.8, "format": 0.1, "code_execution": 0.1})
    failed_cell = [*steps, step(1, "Check the result once more.", "raise ValueError", CellStatus.ERROR)]
    mixed = await l0.score(trajectory(task, failed_cell, answer))
    assert mixed.total == pytest.approx(0.8 + 0.1 * 1.0 + 0.1 * 0.5)


async def test_math_expression_answers() -> None:
    env = MathEnvironment(Path(__file__).parent / "fixtures" / "math_problems.csv", splits={"all_tasks": 1.0})
    tasks = {t.id: t for t in env.tasks("all")}
    reward = await env.score(trajectory(tasks["math_problems-root"], [], "sqrt(8)"))
    assert reward.total == 1.0
    reward = await env.score(trajectory(tasks["math_problems-square"], [], "(x + 1)**2"))
    assert reward.total == 1.0
    assert (await env.score(trajectory(TaskSpec(id="x", prompt="p", references=["2"]), [], "3"))).total == 0.0
