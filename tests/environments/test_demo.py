"""The demo world: regenerated exactly by its script, consistent, every answer stated in its passages."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections import Counter
from pathlib import Path

import pytest

from nbagent_environments.qa import DEMO_CORPUS, DEMO_QUESTIONS
from nbagent_environments.qa.scoring import has_answer

SCRIPT = DEMO_CORPUS.parent / "make_demo.py"


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_script_regenerates_the_shipped_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("make_demo", SCRIPT)
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "make_demo", module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    corpus, questions = module.generate(tmp_path)
    assert corpus.read_bytes() == DEMO_CORPUS.read_bytes()
    assert questions.read_bytes() == DEMO_QUESTIONS.read_bytes()


def test_demo_set_shape() -> None:
    passages = _rows(DEMO_CORPUS)
    questions = _rows(DEMO_QUESTIONS)
    assert 250 <= len(passages) <= 350
    assert len(questions) == 50
    assert len({p["id"] for p in passages}) == len(passages)
    assert len({p["title"] for p in passages}) == len(passages)
    assert len({q["question"] for q in questions}) == 50
    kinds = Counter(q["metadata"]["type"] for q in questions)
    assert len(kinds) >= 8
    assert max(kinds.values()) <= 8


def test_every_answer_is_stated_in_its_supporting_passages() -> None:
    passages = {p["id"]: p for p in _rows(DEMO_CORPUS)}
    for q in _rows(DEMO_QUESTIONS):
        support = [passages[pid] for pid in q["metadata"]["supporting_passages"]]
        assert len(support) >= 2, q["id"]  # multi-hop by construction
        text = " ".join(f"{p['title']}. {p['text']}" for p in support)
        assert has_answer(text, q["golden_answers"]), (q["id"], q["golden_answers"])
        for bridge in q["metadata"]["bridge_entities"]:
            assert bridge in text, (q["id"], bridge)
