"""Web search through configurable providers over httpx: Serper, Tavily, Brave and SearXNG.

Each provider turns a query into ``[{"title","url","snippet"}]``. API keys are read from the host's
environment when a search runs (the search tool runs in the host; the kernel never sees the key).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import anyio
import httpx

from nbagent.errors import ToolError

__all__ = ["PROVIDERS", "SearchError", "SearchProvider", "WebSearch", "format_results"]

Method = Literal["GET", "POST"]


class SearchError(ToolError):
    """A web search could not be made (missing key, rejected key, provider down, bad reply)."""


@dataclass(frozen=True)
class SearchProvider:
    """How to ask one search API: endpoint, where the key goes, and where the results are in the reply."""

    name: str
    base_url: str
    path: str
    method: Method
    api_key_env: str | None
    """Host environment variable holding the API key (None: the provider needs no key)."""
    base_url_env: str | None = None
    """Host environment variable that overrides `base_url` (needed for self-hosted SearXNG)."""

    def request(self, query: str, max_results: int, api_key: str | None) -> dict[str, Any]:
        """Keyword arguments for ``httpx.AsyncClient.request`` (without method and url)."""
        if self.name == "serper":
            return {"headers": {"X-API-KEY": api_key or ""}, "json": {"q": query, "num": max_results}}
        if self.name == "tavily":
            return {
                "headers": {"Authorization": f"Bearer {api_key}"},
                "json": {"query": query, "max_results": max_results},
            }
        if self.name == "brave":
            return {
                "headers": {"X-Subscription-Token": api_key or "", "Accept": "application/json"},
                "params": {"q": query, "count": max_results},
            }
        return {"params": {"q": query, "format": "json"}}

    def parse(self, body: Any) -> list[dict[str, str]]:
        """The results of a reply as ``{"title","url","snippet"}`` dicts."""
        if not isinstance(body, dict):
            raise SearchError(f"{self.name} returned {type(body).__name__}, expected a JSON object")
        results: list[dict[str, str]] = []
        if self.name == "serper":
            box = body.get("answerBox") or {}
            answer = box.get("answer") or box.get("snippet")
            if answer:
                results.append(
                    {"title": box.get("title", "Answer"), "url": box.get("link", ""), "snippet": answer}
                )
            rows, keys = body.get("organic") or [], ("title", "link", "snippet")
        elif self.name == "brave":
            rows, keys = (body.get("web") or {}).get("results") or [], ("title", "url", "description")
        else:  # tavily, searxng
            rows, keys = body.get("results") or [], ("title", "url", "content")
        for row in rows:
            if isinstance(row, dict):
                title, url, snippet = (_strip_tags(str(row.get(k) or "")) for k in keys)
                results.append({"title": title, "url": url, "snippet": snippet})
        return results


PROVIDERS: dict[str, SearchProvider] = {
    p.name: p
    for p in (
        SearchProvider("serper", "https://google.serper.dev", "/search", "POST", "SERPER_API_KEY"),
        SearchProvider("tavily", "https://api.tavily.com", "/search", "POST", "TAVILY_API_KEY"),
        SearchProvider("brave", "https://api.search.brave.com", "/res/v1/web/search", "GET", "BRAVE_API_KEY"),
        SearchProvider("searxng", "", "/search", "GET", None, base_url_env="SEARXNG_URL"),
    )
}

_TAG = re.compile(r"<[^>]+>")
_RETRYABLE = (429, 500, 502, 503, 504)


def _strip_tags(text: str) -> str:
    return " ".join(_TAG.sub("", text).split())


def format_results(query: str, results: Sequence[dict[str, str]], budget_chars: int) -> str:
    """Numbered results as text, cut to `budget_chars` (whole results first, then a cut marker)."""
    if not results:
        return f"No results for {query!r}."
    blocks = [
        f"{n}. {r['title']}\n   {r['url']}\n   {r['snippet']}".rstrip() for n, r in enumerate(results, 1)
    ]
    text = "\n".join(blocks)
    if len(text) <= budget_chars:
        return text
    marker = f"\n[... cut to {budget_chars} characters]"
    return text[: max(0, budget_chars - len(marker))].rstrip() + marker


class WebSearch:
    """A configured web search: provider, endpoint, key variable, result count and output budget."""

    def __init__(
        self,
        provider: str = "serper",
        *,
        base_url: str | None = None,
        api_key_env: str | None = None,
        max_results: int = 5,
        budget_chars: int = 1000,
        timeout_s: float = 20.0,
        retries: int = 2,
    ) -> None:
        if provider not in PROVIDERS:
            raise SearchError(f"unknown search provider {provider!r}; choose one of {', '.join(PROVIDERS)}")
        self.provider = PROVIDERS[provider]
        self._base_url = base_url
        self.api_key_env = api_key_env or self.provider.api_key_env
        self.max_results = max_results
        self.budget_chars = budget_chars
        self.timeout_s = timeout_s
        self.retries = retries

    def _endpoint(self) -> str:
        base = self._base_url
        if base is None and self.provider.base_url_env:
            base = os.environ.get(self.provider.base_url_env)
        base = base or self.provider.base_url
        if not base:
            raise SearchError(
                f"{self.provider.name} needs the address of a server: set {self.provider.base_url_env} "
                "in the host environment (e.g. http://127.0.0.1:8888) or pass base_url"
            )
        return base.rstrip("/") + self.provider.path

    def _api_key(self) -> str | None:
        if self.api_key_env is None:
            return None
        key = os.environ.get(self.api_key_env)
        if not key:
            raise SearchError(
                f"web search through {self.provider.name} needs an API key: set {self.api_key_env} in the "
                "environment of the process running nbagent (it is never passed to the kernel)"
            )
        return key

    async def results(self, query: str) -> list[dict[str, str]]:
        """Search and return ``{"title","url","snippet"}`` dicts. Raises `SearchError`."""
        if not query.strip():
            raise SearchError("web_search needs a non-empty query")
        url, key = self._endpoint(), self._api_key()
        request = self.provider.request(query, self.max_results, key)
        async with httpx.AsyncClient(timeout=self.timeout_s) as client:
            attempt = 0
            while True:
                try:
                    response = await client.request(self.provider.method, url, **request)
                except httpx.HTTPError as exc:
                    failure = SearchError(f"{self.provider.name} at {url} could not be reached: {exc}")
                else:
                    if response.status_code < 400:
                        return self._parse(response)
                    if response.status_code in (401, 403):
                        raise SearchError(
                            f"{self.provider.name} rejected the API key in {self.api_key_env} "
                            f"(HTTP {response.status_code}); check the key"
                        )
                    failure = SearchError(
                        f"{self.provider.name} answered HTTP {response.status_code}: {response.text[:200]}"
                    )
                    if response.status_code not in _RETRYABLE:
                        raise failure
                if attempt >= self.retries:
                    raise failure
                attempt += 1
                await anyio.sleep(0.25 * 2**attempt)

    def _parse(self, response: httpx.Response) -> list[dict[str, str]]:
        try:
            body = response.json()
        except ValueError as exc:
            raise SearchError(f"{self.provider.name} replied with something other than JSON ({exc})") from exc
        return self.provider.parse(body)[: self.max_results]

    async def __call__(self, query: str) -> str:
        """Search and return the results as text within the budget."""
        return format_results(query, await self.results(query), self.budget_chars)
