"""Web search providers and the page reader against a real local HTTP server."""

from __future__ import annotations

from typing import Any

import pytest

from nbagent.errors import ToolError
from nbagent_environments.qa.search import PROVIDERS, SearchError, WebSearch, format_results
from nbagent_environments.qa.tools import read_webpage_tool, web_search_tool
from nbagent_environments.qa.webpage import PageError, WebpageReader, html_to_markdown

from .conftest import LocalServer, Reply, Request

ROWS = [
    ("Alpha page", "https://a.example/1", "First <b>snippet</b>."),
    ("Beta", "https://b.example", "Second."),
]


def _reply_for(provider: str) -> dict[str, Any]:
    if provider == "serper":
        return {"organic": [{"title": t, "link": u, "snippet": s} for t, u, s in ROWS]}
    if provider == "brave":
        return {"web": {"results": [{"title": t, "url": u, "description": s} for t, u, s in ROWS]}}
    return {"results": [{"title": t, "url": u, "content": s} for t, u, s in ROWS]}


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
async def test_provider_request_and_parsing(
    provider: str, local_server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = PROVIDERS[provider]
    local_server.route(spec.method, spec.path, Reply(body=_reply_for(provider)))
    if spec.api_key_env:
        monkeypatch.setenv(spec.api_key_env, "secret-key-123")
    search = WebSearch(provider, base_url=local_server.url, max_results=2)
    results = await search.results("tallest tower")
    assert results == [
        {"title": "Alpha page", "url": "https://a.example/1", "snippet": "First snippet."},
        {"title": "Beta", "url": "https://b.example", "snippet": "Second."},
    ]
    (request,) = local_server.requests
    assert request.method == spec.method
    if provider == "serper":
        assert request.headers["x-api-key"] == "secret-key-123"
        assert request.json() == {"q": "tallest tower", "num": 2}
    elif provider == "tavily":
        assert request.headers["authorization"] == "Bearer secret-key-123"
        assert request.json() == {"query": "tallest tower", "max_results": 2}
    elif provider == "brave":
        assert request.headers["x-subscription-token"] == "secret-key-123"
        assert request.query == {"q": ["tallest tower"], "count": ["2"]}
    else:
        assert request.query == {"q": ["tallest tower"], "format": ["json"]}


async def test_searxng_address_comes_from_the_host_environment(
    local_server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    local_server.route("GET", "/search", Reply(body=_reply_for("searxng")))
    monkeypatch.delenv("SEARXNG_URL", raising=False)
    with pytest.raises(SearchError, match="set SEARXNG_URL"):
        await WebSearch("searxng").results("q")
    monkeypatch.setenv("SEARXNG_URL", local_server.url + "/")
    assert len(await WebSearch("searxng").results("q")) == 2


async def test_serper_answer_box_comes_first(
    local_server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = {**_reply_for("serper"), "answerBox": {"title": "Quick answer", "answer": "42 metres"}}
    local_server.route("POST", "/search", Reply(body=body))
    monkeypatch.setenv("SERPER_API_KEY", "k")
    results = await WebSearch("serper", base_url=local_server.url).results("height")
    assert results[0] == {"title": "Quick answer", "url": "", "snippet": "42 metres"}


async def test_key_is_read_from_the_host_when_the_tool_runs(
    local_server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    local_server.route("POST", "/search", Reply(body=_reply_for("serper")))
    monkeypatch.delenv("MY_SEARCH_KEY", raising=False)
    tool = web_search_tool(WebSearch("serper", base_url=local_server.url, api_key_env="MY_SEARCH_KEY"))
    assert "def web_search(query: str) -> str:" in tool.render_stub()
    with pytest.raises(ToolError, match="set MY_SEARCH_KEY in the environment"):
        await tool.invoke(["q"], {})
    assert local_server.requests == []  # nothing was sent without a key
    monkeypatch.setenv("MY_SEARCH_KEY", "later-key")
    text = await tool.invoke(["q"], {})
    assert text.startswith("1. Alpha page\n   https://a.example/1\n   First snippet.")
    assert local_server.requests[0].headers["x-api-key"] == "later-key"


async def test_rejected_key_and_server_errors(
    local_server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SERPER_API_KEY", "bad")
    local_server.route("POST", "/search", Reply(403, "forbidden"))
    with pytest.raises(SearchError, match=r"rejected the API key in SERPER_API_KEY \(HTTP 403\)"):
        await WebSearch("serper", base_url=local_server.url).results("q")
    assert len(local_server.requests) == 1  # not retried

    calls: list[int] = []

    def flaky(request: Request) -> Reply:
        calls.append(1)
        return Reply(503, "busy") if len(calls) < 3 else Reply(body=_reply_for("serper"))

    local_server.route("POST", "/search", flaky)
    assert len(await WebSearch("serper", base_url=local_server.url, retries=2).results("q")) == 2
    assert len(calls) == 3

    calls.clear()
    with pytest.raises(SearchError, match="answered HTTP 503: busy"):
        await WebSearch("serper", base_url=local_server.url, retries=1).results("q")
    assert len(calls) == 2

    local_server.route("POST", "/search", Reply(body="<html>not json</html>"))
    with pytest.raises(SearchError, match="other than JSON"):
        await WebSearch("serper", base_url=local_server.url).results("q")


async def test_unreachable_provider_and_bad_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERPER_API_KEY", "k")
    search = WebSearch("serper", base_url="http://127.0.0.1:9", retries=0, timeout_s=5)
    with pytest.raises(SearchError, match="could not be reached"):
        await search.results("q")
    with pytest.raises(SearchError, match="non-empty query"):
        await search.results("   ")
    with pytest.raises(SearchError, match="choose one of serper, tavily, brave, searxng"):
        WebSearch("bing")


def test_format_results_keeps_the_budget() -> None:
    results = [
        {"title": f"Title {i}", "url": f"https://x.example/{i}", "snippet": "word " * 40} for i in range(10)
    ]
    text = format_results("q", results, 1000)
    assert len(text) <= 1000
    assert text.startswith("1. Title 0")
    assert text.endswith("[... cut to 1000 characters]")
    assert format_results("q", results[:1], 1000).count("\n") == 2
    assert format_results("nothing", [], 1000) == "No results for 'nothing'."


# --------------------------------------------------------------------------------------------------
# Page reader
# --------------------------------------------------------------------------------------------------

PAGE = """<!doctype html>
<html><head><title>Rivers of Calvessa</title><style>body {color: red}</style>
<script>var tracking = "do not show";</script></head>
<body>
<nav><a href="/">Home</a></nav>
<h1>Rivers</h1>
<p>The <b>Quell</b> rises on <a href="/mountains/grahairn">Mount Grahairn</a> and is
   <em>long</em>.</p>
<h2>Towns</h2>
<ul><li>Telldale</li><li>Faerstead<ol><li>old quarter</li><li>harbour</li></ol></li></ul>
<table><tr><th>River</th><th>Length</th></tr><tr><td>Quell</td><td>420 km</td></tr></table>
<pre><code>x = 1
y = 2</code></pre>
<blockquote>Water is patient.</blockquote>
<p>Inline <code>code()</code> and&nbsp;entities &amp; more.<br>Next line.</p>
<img src="map.png" alt="A map">
</body></html>"""


def test_html_to_markdown() -> None:
    md = html_to_markdown(PAGE, base_url="http://site.example/rivers/index.html")
    assert "do not show" not in md
    assert "color: red" not in md
    assert "# Rivers\n" in md
    assert "## Towns" in md
    assert (
        "The **Quell** rises on [Mount Grahairn](http://site.example/mountains/grahairn) and is *long*." in md
    )
    assert "- Telldale\n- Faerstead\n  1. old quarter\n  2. harbour" in md
    assert "| River | Length |\n| --- | --- |\n| Quell | 420 km |" in md
    assert "```\nx = 1\ny = 2\n```" in md
    assert "> Water is patient." in md
    assert "Inline `code()` and entities & more.\nNext line." in md
    assert "[image: A map]" in md
    assert "\n\n\n" not in md


def test_html_title_becomes_a_heading_without_h1() -> None:
    assert html_to_markdown("<title>Only title</title><p>Body text</p>") == "# Only title\n\nBody text"
    assert html_to_markdown("<p>unclosed <a href='x'>link") == "unclosed [link](x)"


async def test_read_webpage_against_a_local_server(local_server: LocalServer) -> None:
    local_server.route("GET", "/page", Reply(body=PAGE, headers={"Content-Type": "text/html; charset=utf-8"}))
    local_server.route("GET", "/moved", Reply(302, headers={"Location": "/page"}))
    local_server.route("GET", "/plain", Reply(body="just text", headers={"Content-Type": "text/plain"}))
    local_server.route(
        "GET", "/big", Reply(body="<p>" + "word " * 5000 + "</p>", headers={"Content-Type": "text/html"})
    )
    local_server.route("GET", "/binary", Reply(body=b"\x89PNG", headers={"Content-Type": "image/png"}))
    local_server.route("GET", "/gone", Reply(404, "missing"))

    read = read_webpage_tool(budget_chars=2000)
    assert read.name == "read_webpage"
    md = await read.invoke([f"{local_server.url}/moved"], {})
    assert md.startswith("# Rivers")
    assert f"[Mount Grahairn]({local_server.url}/mountains/grahairn)" in md
    assert await read.invoke([f"{local_server.url}/plain"], {}) == "just text"
    big = await read.invoke([f"{local_server.url}/big"], {})
    assert len(big) <= 2000
    assert big.endswith("this shows the first 2000]")
    with pytest.raises(PageError, match="image/png, not a page"):
        await WebpageReader()(f"{local_server.url}/binary")
    with pytest.raises(PageError, match="answered HTTP 404"):
        await WebpageReader()(f"{local_server.url}/gone")
    with pytest.raises(PageError, match="needs an http:// or https:// URL"):
        await WebpageReader()("file:///etc/passwd")
