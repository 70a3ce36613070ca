"""Read a web page as markdown: fetch with httpx, convert HTML with a small converter, cut to a budget.

The converter keeps what matters for reading: headings, paragraphs, links, emphasis, lists, code,
quotes and tables. Scripts, styles and other invisible parts are dropped.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urljoin, urlparse

import httpx

from nbagent.errors import ToolError

__all__ = ["PageError", "WebpageReader", "html_to_markdown"]


class PageError(ToolError):
    """A page could not be fetched or read."""


_SKIP = {
    "script",
    "style",
    "noscript",
    "template",
    "svg",
    "iframe",
    "head",
    "title",
    "nav",
    "button",
    "select",
}
_BLOCK = {
    "p", "div", "section", "article", "main", "header", "footer", "nav", "aside", "figure", "figcaption",
    "form", "fieldset", "dl", "dt", "dd", "address", "details", "summary", "body", "html",
}  # fmt: skip
_INLINE = {"strong": "**", "b": "**", "em": "*", "i": "*", "code": "`"}
_VOID = {"br", "hr", "img", "meta", "link", "input", "wbr", "area", "base", "col", "source", "track"}


class _Converter(HTMLParser):
    def __init__(self, base_url: str | None) -> None:
        super().__init__(convert_charrefs=True)
        self.base_url = base_url
        self.title = ""
        self._in_title = False
        self._skip_depth = 0
        self._pre_depth = 0
        self._buffers: list[list[str]] = [[]]  # a stack: links and table cells capture their text
        self._links: list[str | None] = []
        self._lists: list[list[int]] = []  # per open list: [is_ordered, next number]
        self._quote_depth = 0
        self._rows: list[list[list[str]]] = []  # per open table: its rows of cells
        self._header_row: list[bool] = []

    # -- output helpers -----------------------------------------------------------------------------

    def _emit(self, text: str) -> None:
        self._buffers[-1].append(text)

    def _break(self) -> None:
        self._emit("\n\n")

    def _prefix(self) -> str:
        return "> " * self._quote_depth

    # -- parser callbacks ---------------------------------------------------------------------------

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        if self._skip_depth or tag in _SKIP:
            if tag not in _VOID:
                self._skip_depth += 1
            return
        attr = dict(attrs)
        if tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            self._break()
            self._emit(self._prefix() + "#" * int(tag[1]) + " ")
        elif tag in _BLOCK:
            self._break()
        elif tag == "br":
            self._emit("\n" + self._prefix())
        elif tag == "hr":
            self._break()
            self._emit("---")
            self._break()
        elif tag == "pre":
            self._pre_depth += 1
            self._break()
            self._emit("```\n")
        elif tag in _INLINE and not (tag == "code" and self._pre_depth):
            self._emit(_INLINE[tag])
        elif tag == "blockquote":
            self._quote_depth += 1
            self._break()
            self._emit(self._prefix())
        elif tag in ("ul", "ol"):
            if not self._lists:  # a nested list starts on its parent item's next line, through <li>
                self._break()
            self._lists.append([tag == "ol", 1])
        elif tag == "li":
            indent = "  " * max(0, len(self._lists) - 1)
            marker = "- "
            if self._lists and self._lists[-1][0]:
                marker = f"{self._lists[-1][1]}. "
                self._lists[-1][1] += 1
            self._emit("\n" + self._prefix() + indent + marker)
        elif tag == "a":
            self._links.append(attr.get("href"))
            self._buffers.append([])
        elif tag == "img":
            alt = (attr.get("alt") or "").strip()
            if alt:
                self._emit(f"[image: {alt}]")
        elif tag == "table":
            self._rows.append([])
            self._header_row.append(False)
            self._break()
        elif tag == "tr" and self._rows:
            self._rows[-1].append([])
        elif tag in ("td", "th") and self._rows:
            if tag == "th" and len(self._rows[-1]) == 1:
                self._header_row[-1] = True
            self._buffers.append([])

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        if self._skip_depth:
            if tag in _SKIP or tag not in _VOID:
                self._skip_depth -= 1
            return
        if tag in ("h1", "h2", "h3", "h4", "h5", "h6") or tag in _BLOCK:
            self._break()
        elif tag == "pre" and self._pre_depth:
            self._pre_depth -= 1
            self._emit("\n```")
            self._break()
        elif tag in _INLINE and not (tag == "code" and self._pre_depth):
            self._emit(_INLINE[tag])
        elif tag == "blockquote" and self._quote_depth:
            self._quote_depth -= 1
            self._break()
        elif tag in ("ul", "ol") and self._lists:
            self._lists.pop()
            if not self._lists:
                self._break()
        elif tag == "a" and self._links:
            self._close_link()
        elif tag in ("td", "th") and self._rows and len(self._buffers) > 1:
            cell = " ".join("".join(self._buffers.pop()).split()).replace("|", "\\|")
            if self._rows[-1]:
                self._rows[-1][-1].append(cell)
        elif tag == "table" and self._rows:
            self._emit_table(self._rows.pop(), self._header_row.pop())

    def _close_link(self) -> None:
        text = " ".join("".join(self._buffers.pop()).split())
        href = self._links.pop()
        if href and text and not href.startswith(("#", "javascript:", "mailto:")):
            target = urljoin(self.base_url, href) if self.base_url else href
            self._emit(f"[{text}]({target})")
        else:
            self._emit(text)

    def _emit_table(self, rows: list[list[str]], has_header: bool) -> None:
        rows = [row for row in rows if row]
        if not rows:
            return
        width = max(len(row) for row in rows)
        lines = ["| " + " | ".join(row + [""] * (width - len(row))) + " |" for row in rows]
        if has_header:
            lines.insert(1, "|" + " --- |" * width)
        self._break()
        self._emit("\n".join(lines))
        self._break()

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        if self._skip_depth:
            return
        if self._pre_depth:
            self._emit(data)
            return
        text = re.sub(r"\s+", " ", data)
        if text.strip() or (text and self._buffers[-1] and not self._buffers[-1][-1].endswith((" ", "\n"))):
            self._emit(text)

    def result(self) -> str:
        while self._links:  # unclosed links
            self._close_link()
        while len(self._buffers) > 1:
            text = "".join(self._buffers.pop())
            self._emit(text)
        raw = "".join(self._buffers[0])
        lines = [line.rstrip() for line in raw.split("\n")]
        out = "\n".join(lines)
        out = re.sub(r"\n[ \t]+(?=[^\s>\-\d])", "\n", out)
        return re.sub(r"\n{3,}", "\n\n", out).strip()


def html_to_markdown(html: str, base_url: str | None = None) -> str:
    """Convert an HTML document or fragment to markdown. Relative links are resolved against `base_url`.

    The page's ``<title>`` becomes a top heading when the body has no ``h1``.
    """
    converter = _Converter(base_url)
    converter.feed(html)
    converter.close()
    body = converter.result()
    title = " ".join(converter.title.split())
    if title and not re.search(r"^# ", body, flags=re.MULTILINE):
        body = f"# {title}\n\n{body}" if body else f"# {title}"
    return body


def cut(text: str, budget_chars: int) -> str:
    """`text` cut to `budget_chars` with a marker saying how much was left out."""
    if len(text) <= budget_chars:
        return text
    marker = f"\n\n[... cut: the page has {len(text)} characters; this shows the first {budget_chars}]"
    return text[: max(0, budget_chars - len(marker))] + marker


class WebpageReader:
    """Fetches a URL and returns it as markdown (HTML) or text, within `budget_chars`."""

    def __init__(
        self, *, budget_chars: int = 50_000, timeout_s: float = 20.0, max_bytes: int = 5_000_000
    ) -> None:
        self.budget_chars = budget_chars
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes

    async def __call__(self, url: str) -> str:
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise PageError(f"read_webpage needs an http:// or https:// URL, got {url!r}")
        headers = {
            "User-Agent": "nbagent/0.1 (+https://github.com/nbagent/nbagent)",
            "Accept": "text/html,*/*",
        }
        try:
            async with (
                httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=True, headers=headers) as client,
                client.stream("GET", url) as response,
            ):
                if response.status_code >= 400:
                    raise PageError(f"{url} answered HTTP {response.status_code}")
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body.extend(chunk)
                    if len(body) >= self.max_bytes:
                        break
                content_type = response.headers.get("content-type", "").lower()
                encoding = response.encoding or "utf-8"
                final_url = str(response.url)
        except httpx.HTTPError as exc:
            raise PageError(f"could not fetch {url}: {exc}") from exc
        text = bytes(body).decode(encoding, errors="replace")
        if "html" in content_type or (not content_type and text.lstrip()[:1] == "<"):
            text = html_to_markdown(text, base_url=final_url)
        elif not (content_type.startswith("text/") or "json" in content_type or "xml" in content_type):
            raise PageError(f"{url} is {content_type or 'of unknown type'}, not a page read_webpage can show")
        return cut(text, self.budget_chars)
