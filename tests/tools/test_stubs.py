"""Stubs: what the model reads about each tool in its prompt."""

from __future__ import annotations

import ast
import collections.abc
import dataclasses
import enum
import typing
from typing import Annotated, Any, Literal, Optional, Union

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, Field
from typing_extensions import TypedDict

from nbagent.tools import RunContext, Toolset, tool
from nbagent.tools.render import format_annotation


class Mode(enum.Enum):
    FAST = "fast"
    SLOW = "slow"


class Author(BaseModel):
    """Who wrote it."""

    name: str = Field(description="Full name.")
    born: int | None = None


class Book(BaseModel):
    title: str
    authors: list[Author] = Field(default_factory=list)


@dataclasses.dataclass
class Span:
    start: int
    end: int = 0


class Hit(TypedDict):
    url: str
    score: float


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        (int, "int"),
        (None, "None"),
        (Any, "Any"),
        (list[str], "list[str]"),
        (typing.List[str], "list[str]"),  # noqa: UP006
        (dict[str, list[int]], "dict[str, list[int]]"),
        (Optional[int], "int | None"),  # noqa: UP045
        (Union[int, str, None], "int | str | None"),  # noqa: UP007
        (int | None, "int | None"),
        (tuple[int, ...], "tuple[int, ...]"),
        (Literal["a", 1], "Literal['a', 1]"),
        (Mode, "Literal['fast', 'slow']"),
        (Literal[Mode.FAST], "Literal['fast']"),
        (Book, "Book"),
        (list[Book] | None, "list[Book] | None"),
        (Annotated[int, Field(ge=0)], "int"),
        (collections.abc.Sequence[str], "Sequence[str]"),
        (collections.abc.Callable[[int], str], "Callable[[int], str]"),
    ],
)
def test_format_annotation(annotation: Any, expected: str) -> None:
    assert format_annotation(annotation) == expected


_leaf_types = st.sampled_from([int, str, float, bool, Any])


def _combine(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        inner.map(lambda t: list[t]),  # type: ignore[valid-type]
        inner.map(lambda t: dict[str, t]),  # type: ignore[valid-type]
        st.tuples(inner, inner).map(lambda pair: tuple.__class_getitem__(pair)),
        inner.map(lambda t: Optional[t]),  # noqa: UP045
        st.lists(st.one_of(st.integers(-5, 5), st.text(max_size=3)), min_size=1, max_size=3).map(
            lambda values: Literal[tuple(values)]
        ),
    )


@given(st.recursive(_leaf_types, _combine, max_leaves=6))
def test_rendered_annotations_evaluate_back_to_the_same_type(annotation: Any) -> None:
    namespace = {"Any": Any, "Literal": Literal}
    assert eval(format_annotation(annotation), namespace) == annotation


@tool
def search_books(
    ctx: RunContext[None],
    query: str,
    mode: Mode = Mode.FAST,
    /,
    limit: int = 10,
    *,
    authors: list[Author] | None = None,
) -> list[Book]:
    """Search the catalogue.

    Args:
        query: Words to look for.
        limit: At most this many.
    """
    return []


def test_stub_of_a_tool_with_structured_types() -> None:
    assert (
        search_books.render_stub()
        == '''\
class Author(TypedDict):
    """Who wrote it."""
    name: str  # Full name.
    born: int | None = None

class Book(TypedDict):
    title: str
    authors: list[Author] = ...

def search_books(
    query: str,
    mode: Literal['fast', 'slow'] = 'fast',
    /,
    limit: int = 10,
    *,
    authors: list[Author] | None = None,
) -> list[Book]:
    """Search the catalogue.

    Args:
        query: Words to look for.
        limit: At most this many.
    """
    ...'''
    )


def test_short_stub_stays_on_one_line_and_is_valid_python() -> None:
    @tool
    def span_of(text: str, hit: Hit) -> Span:
        """Where a hit is."""
        return Span(0)

    stub = span_of.render_stub()
    assert stub.endswith('def span_of(text: str, hit: Hit) -> Span:\n    """Where a hit is."""\n    ...')
    assert "class Hit(TypedDict):\n    url: str\n    score: float" in stub
    assert "class Span(TypedDict):\n    start: int\n    end: int = 0" in stub
    ast.parse(stub)


def test_stub_without_docstring() -> None:
    @tool
    def ping() -> None:
        pass

    assert ping.render_stub() == "def ping() -> None:\n    ..."


def test_docstring_with_quotes_and_backslashes_survives() -> None:
    @tool
    def tricky(pattern: str) -> bool:
        """Match a regex like r'\\d+' or \"\"\"quoted\"\"\" text, ending in a quote: \""""
        return True

    tree = ast.parse(tricky.render_stub())
    function = tree.body[0]
    assert isinstance(function, ast.FunctionDef)
    assert ast.get_docstring(function, clean=False) == tricky.docstring
    assert tricky.docstring.endswith('quote: "')


def test_render_signature_for_the_kernel_side() -> None:
    assert search_books.render_signature().startswith("(\n    query: str,\n")
    assert str(search_books.signature.parameters["mode"].annotation) == str(Mode)


def test_toolset_renders_each_type_once() -> None:
    @tool
    def first_author(book: Book) -> Author:
        """The first author."""
        return book.authors[0]

    stubs = Toolset([search_books, first_author]).render_stubs()
    assert stubs.count("class Author(TypedDict):") == 1
    assert stubs.count("class Book(TypedDict):") == 1
    assert stubs.index("class Author") < stubs.index("class Book") < stubs.index("def search_books")
    assert stubs.index("def search_books") < stubs.index("def first_author")
    assert first_author.render_stub(include_types=False) in stubs
    ast.parse(stubs)
