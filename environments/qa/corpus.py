"""Offline search: a BM25 index (``bm25s``) over a JSONL corpus of ``{"id","title","text"}`` passages.

An index is built once per corpus file and kept in memory for the process, and on disk under the cache
folder (``NBAGENT_CACHE_DIR`` or ``~/.cache/nbagent``), keyed by the file's path, size and modification
time, so other processes (rollout workers) load it instead of rebuilding it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, ClassVar

from nbagent.errors import ConfigError

__all__ = ["CorpusError", "CorpusIndex", "cache_dir"]

_STOPWORDS = "en"


class CorpusError(ConfigError):
    """A corpus file is missing or malformed."""


def cache_dir() -> Path:
    """nbagent's cache folder: ``$NBAGENT_CACHE_DIR`` or ``~/.cache/nbagent``."""
    return Path(os.environ.get("NBAGENT_CACHE_DIR") or Path.home() / ".cache" / "nbagent")


def read_corpus(path: Path) -> list[dict[str, str]]:
    """The passages of a JSONL corpus; each line needs ``id`` and ``text`` (``title`` is optional)."""
    if not path.is_file():
        raise CorpusError(f"corpus file {path} does not exist; pass a JSONL file of {{id, title, text}} rows")
    passages: list[dict[str, str]] = []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CorpusError(f"{path}:{line_no}: not valid JSON ({exc.msg})") from exc
            if not isinstance(row, dict) or "text" not in row or "id" not in row:
                raise CorpusError(f"{path}:{line_no}: a passage needs the keys 'id' and 'text'")
            passages.append(
                {"id": str(row["id"]), "title": str(row.get("title") or ""), "text": str(row["text"])}
            )
    if not passages:
        raise CorpusError(f"corpus file {path} holds no passages")
    return passages


class CorpusIndex:
    """BM25 search over the passages of one corpus file. Get one with `for_file` (cached)."""

    _memory: ClassVar[dict[tuple[str, int, int], CorpusIndex]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, path: str | Path, *, use_disk_cache: bool = True) -> None:
        import bm25s

        self.path = Path(path).resolve()
        self.passages = read_corpus(self.path)
        stat = self.path.stat()
        fingerprint = f"{self.path}\x00{stat.st_size}\x00{stat.st_mtime_ns}\x00{bm25s.__version__}"
        folder = cache_dir() / "bm25" / hashlib.sha256(fingerprint.encode()).hexdigest()[:24]
        self.loaded_from_cache = False
        if use_disk_cache and (folder / "params.index.json").is_file():
            self._retriever = bm25s.BM25.load(str(folder), show_progress=False)
            self.loaded_from_cache = True
        else:
            texts = [f"{p['title']}\n{p['text']}" for p in self.passages]
            tokens = bm25s.tokenize(texts, stopwords=_STOPWORDS, show_progress=False)
            self._retriever = bm25s.BM25()
            self._retriever.index(tokens, show_progress=False)
            if use_disk_cache:
                self._save(folder)

    def _save(self, folder: Path) -> None:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".tmp-"))
        self._retriever.save(str(tmp), show_progress=False)
        try:
            tmp.rename(folder)
        except OSError:  # another process saved the same index first
            shutil.rmtree(tmp, ignore_errors=True)

    @classmethod
    def for_file(cls, path: str | Path) -> CorpusIndex:
        """The index of `path`, built at most once per process (rebuilt when the file changes)."""
        resolved = Path(path).resolve()
        if not resolved.is_file():
            raise CorpusError(
                f"corpus file {resolved} does not exist; pass a JSONL file of {{id, title, text}} rows"
            )
        stat = resolved.stat()
        key = (str(resolved), stat.st_size, stat.st_mtime_ns)
        with cls._lock:
            if key not in cls._memory:
                cls._memory[key] = cls(resolved)
            return cls._memory[key]

    def search(self, query: str, k: int = 5) -> list[dict[str, Any]]:
        """The `k` best passages for `query` with a positive BM25 score, best first, as
        ``{"id","title","text","score"}`` dicts."""
        import bm25s

        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        query_tokens = bm25s.tokenize([query], stopwords=_STOPWORDS, show_progress=False, return_ids=False)
        if not query_tokens[0]:
            return []
        docs, scores = self._retriever.retrieve(
            query_tokens, k=min(k, len(self.passages)), show_progress=False, n_threads=1
        )
        return [
            {**self.passages[int(doc)], "score": round(float(score), 4)}
            for doc, score in zip(docs[0], scores[0], strict=True)
            if score > 0
        ]
