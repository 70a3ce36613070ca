"""A small docstring reader: the summary paragraph and per-parameter descriptions.

Google (``Args:``), NumPy (``Parameters`` underlined with dashes) and Sphinx (``:param name:``) styles are
understood; a docstring may use any of them. Only what tools need is extracted: the first paragraph (the
tool's description), the text after it, and one description per parameter.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field

_GOOGLE_PARAM_HEADERS = {"args", "arguments", "parameters", "params", "keyword args", "keyword arguments"}
_GOOGLE_OTHER_HEADERS = {
    "returns",
    "return",
    "yields",
    "yield",
    "raises",
    "raise",
    "examples",
    "example",
    "note",
    "notes",
    "attributes",
    "see also",
    "warning",
    "warnings",
    "todo",
    "references",
    "other parameters",
}
_NUMPY_PARAM_HEADERS = {"parameters", "other parameters", "keyword arguments"}
_GOOGLE_HEADER = re.compile(r"^(?P<title>[A-Za-z][A-Za-z ]*):\s*$")
_NUMPY_UNDERLINE = re.compile(r"^\s*-{3,}\s*$")
_SPHINX_FIELD = re.compile(r"^:[A-Za-z]+(\s[^:]*)?:")
_SPHINX_PARAM = re.compile(
    r"^:(?:param|parameter|arg|argument|key|keyword)\s+(?:[^:]*?\s+)?(?P<name>\*{0,2}\w+)\s*:\s*(?P<desc>.*)$"
)
_GOOGLE_ENTRY = re.compile(r"^(?P<name>\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:(?P<desc>.*)$")
_NUMPY_ENTRY = re.compile(r"^(?P<names>\*{0,2}\w+(?:\s*,\s*\*{0,2}\w+)*)\s*(?::.*)?$")


@dataclass(frozen=True)
class Docstring:
    """What a tool takes from its function's docstring."""

    summary: str = ""
    """The first paragraph, its lines joined by single spaces."""
    rest: str = ""
    """The cleaned docstring after the first paragraph (sections such as ``Args:`` included)."""
    params: dict[str, str] = field(default_factory=dict)
    """Parameter name -> description, whitespace collapsed."""


def parse_docstring(doc: str | None) -> Docstring:
    """Read the summary, the remaining text and parameter descriptions of a docstring."""
    lines = inspect.cleandoc(doc).splitlines() if doc else []
    end = 0
    while end < len(lines) and lines[end].strip() and not _starts_section(lines, end):
        end += 1
    rest_start = end
    while rest_start < len(lines) and not lines[rest_start].strip():
        rest_start += 1
    params = _sphinx_params(lines) | _numpy_params(lines) | _google_params(lines)
    return Docstring(
        summary=" ".join(line.strip() for line in lines[:end]),
        rest="\n".join(lines[rest_start:]).rstrip(),
        params=params,
    )


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _collapse(parts: list[str]) -> str:
    return " ".join(" ".join(parts).split())


def _is_numpy_header(lines: list[str], i: int) -> bool:
    return (
        bool(lines[i].strip())
        and i + 1 < len(lines)
        and bool(_NUMPY_UNDERLINE.match(lines[i + 1]))
        and not _NUMPY_UNDERLINE.match(lines[i])
    )


def _google_header(line: str) -> str | None:
    match = _GOOGLE_HEADER.match(line.strip())
    return match["title"].lower() if match else None


def _starts_section(lines: list[str], i: int) -> bool:
    title = _google_header(lines[i])
    if title is not None and title in _GOOGLE_PARAM_HEADERS | _GOOGLE_OTHER_HEADERS:
        return True
    return _is_numpy_header(lines, i) or bool(_SPHINX_FIELD.match(lines[i].strip()))


def _sphinx_params(lines: list[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    i = 0
    while i < len(lines):
        match = _SPHINX_PARAM.match(lines[i].strip())
        i += 1
        if match is None:
            continue
        parts = [match["desc"]]
        while i < len(lines) and lines[i].strip() and _indent(lines[i]) > 0:
            parts.append(lines[i])
            i += 1
        params[match["name"].lstrip("*")] = _collapse(parts)
    return params


def _google_params(lines: list[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    i = 0
    while i < len(lines):
        title = _google_header(lines[i])
        header_indent = _indent(lines[i])
        i += 1
        if title not in _GOOGLE_PARAM_HEADERS:
            continue
        entry_indent: int | None = None
        name: str | None = None
        while i < len(lines):
            line = lines[i]
            if line.strip():
                if _indent(line) <= header_indent:
                    break
                if entry_indent is None:
                    entry_indent = _indent(line)
                match = _GOOGLE_ENTRY.match(line.strip())
                if _indent(line) <= entry_indent and match:
                    name = match["name"].lstrip("*")
                    params[name] = match["desc"]
                elif name is not None:
                    params[name] += " " + line
            i += 1
    return {key: _collapse([value]) for key, value in params.items()}


def _numpy_params(lines: list[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    i = 0
    while i < len(lines):
        is_param_section = _is_numpy_header(lines, i) and lines[i].strip().lower() in _NUMPY_PARAM_HEADERS
        base = _indent(lines[i])
        i += 2 if is_param_section else 1
        if not is_param_section:
            continue
        names: list[str] = []
        while i < len(lines) and not _is_numpy_header(lines, i):
            line = lines[i]
            match = _NUMPY_ENTRY.match(line.strip())
            if line.strip() and _indent(line) <= base and match:
                names = [name.strip().lstrip("*") for name in match["names"].split(",")]
                for name in names:
                    params[name] = ""
            elif line.strip() and names:
                for name in names:
                    params[name] += " " + line
            i += 1
    return {key: _collapse([value]) for key, value in params.items()}
