"""The docstring reader: summaries and per-parameter descriptions in Google, NumPy and Sphinx styles."""

from __future__ import annotations

import string

from hypothesis import given
from hypothesis import strategies as st

from nbagent.tools.docstrings import parse_docstring

GOOGLE = """Find the population of a city.

    Uses the census of the given year.

    Args:
        city (str): The city name,
            in English.
        year: Census year.
        *extra: Ignored.

    Returns:
        str: The population.
    """

NUMPY = """Find the population
    of a city.

    Parameters
    ----------
    city : str
        The city name,
        in English.
    year, month : int, optional
        When.

    Returns
    -------
    str
        The population.
    """

SPHINX = """Find the population of a city.

    :param city: The city name,
        in English.
    :param int year: Census year.
    :type city: str
    :returns: The population.
    :rtype: str
    """


def test_google() -> None:
    doc = parse_docstring(GOOGLE)
    assert doc.summary == "Find the population of a city."
    assert doc.params == {"city": "The city name, in English.", "year": "Census year.", "extra": "Ignored."}
    assert doc.rest.startswith("Uses the census of the given year.\n\nArgs:\n    city (str): The city name,")
    assert doc.rest.endswith("Returns:\n    str: The population.")


def test_numpy() -> None:
    doc = parse_docstring(NUMPY)
    assert doc.summary == "Find the population of a city."
    assert doc.params == {"city": "The city name, in English.", "year": "When.", "month": "When."}
    assert doc.rest.startswith("Parameters\n----------\n")


def test_sphinx() -> None:
    doc = parse_docstring(SPHINX)
    assert doc.summary == "Find the population of a city."
    assert doc.params == {"city": "The city name, in English.", "year": "Census year."}


def test_summary_stops_at_a_section_without_a_blank_line() -> None:
    doc = parse_docstring("Add numbers.\nArgs:\n    a: First.\n    b: Second.\n")
    assert doc.summary == "Add numbers."
    assert doc.params == {"a": "First.", "b": "Second."}


def test_no_docstring_and_plain_docstring() -> None:
    assert parse_docstring(None).summary == ""
    assert parse_docstring(None).params == {}
    doc = parse_docstring("Just a sentence.\n\nAnd a second paragraph mentioning x: not a parameter.")
    assert doc.summary == "Just a sentence."
    assert doc.params == {}
    assert doc.rest == "And a second paragraph mentioning x: not a parameter."


def test_google_section_after_params_ends_them() -> None:
    doc = parse_docstring(
        """Do it.

        Args:
            a: First.

        Raises:
            ValueError: when a is bad.
        """
    )
    assert doc.params == {"a": "First."}


_words = st.text(alphabet=string.ascii_letters + string.digits + " ,.-()'", min_size=1, max_size=40).map(
    lambda text: " ".join(text.split())
)
_names = st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True)
_params = st.dictionaries(_names, _words.filter(bool), min_size=1, max_size=6)


def _render(style: str, summary: str, params: dict[str, str]) -> str:
    if style == "google":
        body = "Args:\n" + "".join(f"    {name} (int): {text}\n" for name, text in params.items())
    elif style == "numpy":
        body = "Parameters\n----------\n" + "".join(
            f"{name} : int\n    {text}\n" for name, text in params.items()
        )
    else:
        body = "".join(f":param {name}: {text}\n" for name, text in params.items())
    return f"{summary}\n\n{body}"


@given(style=st.sampled_from(["google", "numpy", "sphinx"]), summary=_words.filter(bool), params=_params)
def test_generated_docstrings_parse_back(style: str, summary: str, params: dict[str, str]) -> None:
    doc = parse_docstring(_render(style, summary, params))
    assert doc.summary == summary
    assert doc.params == params
