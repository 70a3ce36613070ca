"""Dataset loaders on fixture files in each official format, and the hub path without network."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from nbagent_environments.qa import QAEnvironment
from nbagent_environments.qa.loaders import (
    DatasetError,
    DatasetUnavailableError,
    detect_format,
    load_hub_dataset,
    load_qa_file,
    rows_to_tasks,
)


def test_simpleqa_csv(fixtures_dir: Path) -> None:
    tasks = load_qa_file(fixtures_dir / "simple_qa_test_set.csv")
    assert len(tasks) == 3
    first = tasks[0]
    assert first.metadata["dataset"] == "simpleqa"
    assert first.prompt.startswith("Which village stands beside")
    assert first.references == ["Tenby Lowe"]
    assert first.metadata["topic"] == "Geography"
    assert first.metadata["urls"] == ["https://example.org/quarry-lake"]
    assert (
        tasks[2].prompt
        == 'Who composed the imaginary "Lantern Waltz" performed at the first Marrowfield fair?'
    )
    assert len({t.id for t in tasks}) == 3
    assert all(t.id.startswith("simpleqa-") for t in tasks)
    # ids come from the question text, so they survive reordering or filtering the file
    assert load_qa_file(fixtures_dir / "simple_qa_test_set.csv")[1].id == tasks[1].id


def test_hotpotqa_json(fixtures_dir: Path) -> None:
    tasks = load_qa_file(fixtures_dir / "hotpot_dev_distractor_v1.json")
    assert [t.id for t in tasks] == ["hotpotqa-5a00000000000000000000a1", "hotpotqa-5a00000000000000000000a2"]
    assert tasks[0].references == ["Kellingport"]
    assert tasks[0].metadata["supporting_titles"] == ["Gannet Point Light", "Petra Voss"]
    assert tasks[1].metadata["type"] == "comparison"
    assert tasks[1].metadata["level"] == "hard"
    assert "context" not in tasks[0].metadata  # paragraphs would bloat every trajectory


def test_2wiki_json(fixtures_dir: Path) -> None:
    (task,) = load_qa_file(fixtures_dir / "2wiki_dev.json")
    assert task.metadata["dataset"] == "2wikimultihopqa"
    assert task.references == ["Hedda Brandt"]
    assert task.metadata["type"] == "compositional"


def test_musique_jsonl(fixtures_dir: Path) -> None:
    tasks = load_qa_file(fixtures_dir / "musique_ans_dev.jsonl")
    assert tasks[0].id == "musique-2hop__1000_2000"
    assert tasks[0].references == ["Esk", "Esk Province", "the province of Esk"]
    assert tasks[0].metadata["supporting_titles"] == ["Corvin Hale", "Dunmere"]
    assert tasks[0].metadata["answerable"] is True
    assert tasks[1].metadata["answerable"] is False


def test_bamboogle_csv_and_flashrag_jsonl(fixtures_dir: Path) -> None:
    bamboogle = load_qa_file(fixtures_dir / "bamboogle.csv")
    assert bamboogle[1].references == ["River Ashby"]
    assert bamboogle[0].metadata["dataset"] == "bamboogle"
    nq = load_qa_file(fixtures_dir / "nq_test.jsonl", dataset="nq")
    assert [t.id for t in nq] == ["nq-test_0", "nq-test_1", "nq-test_2"]
    assert nq[1].references == ["seven", "7"]
    assert nq[1].metadata["note"] == "hand-written"


def test_generic_jsonl_with_answer_or_answers(fixtures_dir: Path) -> None:
    tasks = load_qa_file(fixtures_dir / "plain_qa.jsonl")
    assert tasks[0].references == ["Sulmora"]
    assert tasks[1].references == ["Aster and Brine", "Brine and Aster"]
    assert tasks[0].id.startswith("plain_qa-")


def test_repeated_ids_get_suffixes() -> None:
    rows = [{"id": "x", "question": f"q{i}", "golden_answers": ["a"]} for i in range(3)]
    assert [t.id for t in rows_to_tasks(rows, dataset="d")] == ["d-x", "d-x-2", "d-x-3"]


def test_bad_input_is_named(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        load_qa_file(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "golden_answers": ["a"]}\n{not json\n')
    with pytest.raises(DatasetError, match=r"bad.jsonl:2: not valid JSON"):
        load_qa_file(bad)
    odd = tmp_path / "odd.jsonl"
    odd.write_text('{"prompt": "q", "target": "a"}\n')
    with pytest.raises(DatasetError, match=r"unrecognized QA row with fields \['prompt', 'target'\]"):
        load_qa_file(odd)
    missing = tmp_path / "missing_field.json"
    missing.write_text(
        json.dumps([{"_id": "1", "question": "q", "answer": "a", "supporting_facts": []}, {"_id": "2"}])
    )
    with pytest.raises(DatasetError, match=r"row 2 .* has no field 'question'"):
        load_qa_file(missing)
    with pytest.raises(DatasetError, match="unknown dataset 'nosuchset'"):
        QAEnvironment("nosuchset")
    with pytest.raises(DatasetError, match="does not exist"):
        QAEnvironment("data/missing.jsonl")


def test_detect_format() -> None:
    assert detect_format({"metadata": "{}", "problem": "q", "answer": "a"}) == "simpleqa"
    assert detect_format({"Question": "q", "Answer": "a"}) == "jsonl"


def test_qa_environment_on_each_fixture(fixtures_dir: Path) -> None:
    for name in ("simple_qa_test_set.csv", "hotpot_dev_distractor_v1.json", "musique_ans_dev.jsonl"):
        env = QAEnvironment(fixtures_dir / name, search="none")
        tasks = env.tasks("all")
        assert tasks
        assert all(t.prompt.endswith("Answer the question in a word or a short phrase.") for t in tasks)


def test_missing_datasets_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(DatasetUnavailableError, match="needs the `datasets` package"):
        load_hub_dataset("hotpotqa")


HUB_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from nbagent_environments.qa import QAEnvironment
    from nbagent_environments.qa.loaders import DatasetUnavailableError, load_hub_dataset

    local = load_hub_dataset(sys.argv[1])  # a local folder goes through `datasets` the same way
    print(json.dumps({split: [t.id for t in tasks] for split, tasks in local.items()}))
    env = QAEnvironment("hotpotqa", search="none")
    try:
        env.tasks("train")
    except DatasetUnavailableError as exc:
        print("ERROR", exc)
    """
)


def test_hub_path_offline(tmp_path: Path) -> None:
    """The hub is really asked (through `datasets`, in offline mode here) and fails with a clear error;
    a local dataset folder loads through the same code, with `validation` renamed `dev`."""
    folder = tmp_path / "myset"
    folder.mkdir()
    (folder / "train.jsonl").write_text('{"id": "a", "question": "q1", "golden_answers": ["x"]}\n')
    (folder / "validation.jsonl").write_text('{"id": "b", "question": "q2", "golden_answers": ["y"]}\n')
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    done = subprocess.run(
        [sys.executable, "-c", HUB_SCRIPT, str(folder)], env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert json.loads(lines[0]) == {"train": ["myset-a"], "dev": ["myset-b"]}
    error = lines[-1]
    assert error.startswith("ERROR could not load 'hotpotqa' from the Hugging Face hub")
    assert "RUC-NLPIR/FlashRAG_datasets" in error
    assert "pass its path instead" in error
