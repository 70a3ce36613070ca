"""BM25 search over the demo corpus, for real: recall of supporting passages, caching, the tool."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nbagent.errors import ToolArgumentError, ToolError
from nbagent_environments.qa import DEMO_CORPUS, DEMO_QUESTIONS
from nbagent_environments.qa.corpus import CorpusError, CorpusIndex
from nbagent_environments.qa.tools import corpus_search_tool

K = 5


def _questions() -> list[dict]:
    return [json.loads(line) for line in DEMO_QUESTIONS.read_text().splitlines()]


def demo_recall(index: CorpusIndex, k: int = K) -> dict[str, float]:
    """Recall of supporting passages in the top k.

    - ``passages``: share of all supporting passages found by searching with the question alone;
    - ``first_hop``: share of questions whose first supporting passage is found with the question;
    - ``hop_by_hop``: share of questions whose every supporting passage is found the way an agent
      searches: the question for the first hop, then the name found at the previous hop.
    """
    questions = _questions()
    found = total = first = chained = 0
    for q in questions:
        support = q["metadata"]["supporting_passages"]
        bridges = q["metadata"]["bridge_entities"]
        hits = {h["id"] for h in index.search(q["question"], k)}
        found += sum(s in hits for s in support)
        total += len(support)
        first += support[0] in hits
        queries = [q["question"]] + [
            bridges[i - 1] if bridges else q["question"] for i in range(1, len(support))
        ]
        chained += all(
            s in {h["id"] for h in index.search(qq, k)} for s, qq in zip(support, queries, strict=True)
        )
    n = len(questions)
    return {"passages": found / total, "first_hop": first / n, "hop_by_hop": chained / n}


def test_demo_corpus_recall() -> None:
    recall = demo_recall(CorpusIndex.for_file(DEMO_CORPUS))
    print(f"BM25 recall@{K} on the demo set: {recall}")
    assert recall["first_hop"] >= 0.9
    assert recall["hop_by_hop"] >= 0.9
    assert recall["passages"] >= 0.6


def test_search_results_shape_and_order() -> None:
    index = CorpusIndex.for_file(DEMO_CORPUS)
    hits = index.search("Faerstead Hospital founder", 3)
    assert len(hits) == 3
    assert set(hits[0]) == {"id", "title", "text", "score"}
    assert hits[0]["title"] == "Faerstead Hospital"
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert index.search("the of and", 3) == []  # only stopwords
    assert index.search("zzzqqq xxyyzz", 3) == []  # unknown words score nothing
    assert len(index.search("river", 10_000)) <= len(index.passages)
    with pytest.raises(ValueError, match="k must be at least 1"):
        index.search("river", 0)


def test_index_is_built_once_per_file_and_rebuilt_when_it_changes(tmp_path: Path) -> None:
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"id": "1", "title": "Apple", "text": "A red fruit."}\n')
    first = CorpusIndex.for_file(corpus)
    assert CorpusIndex.for_file(str(corpus)) is first
    corpus.write_text(
        '{"id": "1", "title": "Apple", "text": "A red fruit."}\n'
        '{"id": "2", "title": "Kiwi", "text": "Green."}\n'
    )
    os.utime(corpus, ns=(1, 1))  # a different mtime even on coarse clocks
    second = CorpusIndex.for_file(corpus)
    assert second is not first
    assert second.search("kiwi", 1)[0]["id"] == "2"


def test_disk_cache_is_reused_by_another_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NBAGENT_CACHE_DIR", str(tmp_path / "cache"))
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(
        "".join(
            json.dumps({"id": str(i), "title": f"T{i}", "text": f"word{i} shared"}) + "\n" for i in range(30)
        )
    )
    built = CorpusIndex(corpus)
    assert not built.loaded_from_cache
    assert list((tmp_path / "cache" / "bm25").iterdir())
    script = (
        "import sys; from nbagent_environments.qa.corpus import CorpusIndex; "
        "i = CorpusIndex(sys.argv[1]); print(i.loaded_from_cache, i.search('word7', 1)[0]['id'])"
    )
    env = {**os.environ, "NBAGENT_CACHE_DIR": str(tmp_path / "cache")}
    out = subprocess.run(
        [sys.executable, "-c", script, str(corpus)], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "7"]


def test_bad_corpus_files(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="does not exist"):
        CorpusIndex.for_file(tmp_path / "none.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "1", "text": "ok"}\n{"title": "no id or text"}\n')
    with pytest.raises(CorpusError, match=r"bad.jsonl:2: a passage needs the keys 'id' and 'text'"):
        CorpusIndex(bad, use_disk_cache=False)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(CorpusError, match="holds no passages"):
        CorpusIndex(empty, use_disk_cache=False)


async def test_search_corpus_tool() -> None:
    search = corpus_search_tool(DEMO_CORPUS)
    assert search.name == "search_corpus"
    assert "def search_corpus(query: str, k: int = 5) -> list[Passage]:" in search.render_stub()
    hits = await search.invoke(["Who founded the Faerstead Hospital?"], {"k": 2})
    assert len(hits) == 2
    assert hits[0]["id"] == "p0209"
    assert "Kodroush Fonouskouth" in hits[0]["text"]
    with pytest.raises(ToolError, match="k must be between 1 and 20"):
        await search.invoke(["x"], {"k": 50})
    with pytest.raises(ToolArgumentError):
        await search.invoke([], {})


def test_concurrent_searches_match_serial_ones() -> None:
    """Tools run in worker threads: one shared index must give every thread the right answer."""
    from concurrent.futures import ThreadPoolExecutor

    index = CorpusIndex.for_file(DEMO_CORPUS)
    queries = [q["question"] for q in _questions()] * 4
    serial = [[h["id"] for h in index.search(q, 5)] for q in queries]
    with ThreadPoolExecutor(max_workers=8) as pool:
        parallel = list(pool.map(lambda q: [h["id"] for h in index.search(q, 5)], queries))
    assert parallel == serial
