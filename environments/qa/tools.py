"""The QA environment's tools, as nbagent tools: web search, a page reader and offline corpus search.

Each factory returns a configured `Tool`. The tools run in the host process; kernel code calls them
through generated stubs, so API keys and HTTP clients never enter the kernel.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict

from nbagent.errors import ToolError
from nbagent.tools import Tool, tool

from .corpus import CorpusIndex
from .search import WebSearch
from .webpage import WebpageReader

__all__ = ["Passage", "corpus_search_tool", "read_webpage_tool", "web_search_tool"]


class Passage(TypedDict):
    """A passage of the local corpus."""

    id: str
    title: str
    text: str
    score: float


def web_search_tool(search: WebSearch | str = "serper") -> Tool:
    """`web_search(query)` through a configured `WebSearch`, or a provider name with its defaults
    (serper, tavily, brave or searxng).

    The API key is read from the host environment variable the `WebSearch` names (by default
    SERPER_API_KEY, TAVILY_API_KEY or BRAVE_API_KEY; SearXNG needs SEARXNG_URL instead).
    """
    run = WebSearch(search) if isinstance(search, str) else search

    @tool
    async def web_search(query: str) -> str:
        """Search the web and return the top results (title, URL, snippet) as text.

        Args:
            query: What to search for, like a search-engine query.
        """
        return await run(query)

    return web_search


def read_webpage_tool(*, budget_chars: int = 50_000, timeout_s: float = 20.0) -> Tool:
    """`read_webpage(url)`: the page as markdown, cut to `budget_chars`."""
    reader = WebpageReader(budget_chars=budget_chars, timeout_s=timeout_s)

    @tool
    async def read_webpage(url: str) -> str:
        """Fetch a web page and return its content as markdown (long pages are cut; keep it in a variable
        and print the parts you need).

        Args:
            url: The page's http:// or https:// address.
        """
        return await reader(url)

    return read_webpage


def corpus_search_tool(corpus: str | Path, *, max_k: int = 20) -> Tool:
    """`search_corpus(query, k=5)`: BM25 search over a JSONL corpus of ``{"id","title","text"}``.

    The index is built when the tool is made (once per corpus file and process, cached on disk).
    """
    index = CorpusIndex.for_file(corpus)

    @tool
    def search_corpus(query: str, k: int = 5) -> list[Passage]:
        """Search the document collection and return the k best-matching passages, best first.

        Args:
            query: Keywords or a question; names of people, places and things work best.
            k: How many passages to return (1 to 20).
        """
        if not 1 <= k <= max_k:
            raise ToolError(f"search_corpus: k must be between 1 and {max_k}, got {k}")
        return [
            Passage(id=hit["id"], title=hit["title"], text=hit["text"], score=hit["score"])
            for hit in index.search(query, k)
        ]

    return search_corpus
