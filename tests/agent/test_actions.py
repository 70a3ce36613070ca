"""The action parsers: what each completion becomes, and what the model is told when it is broken."""

from __future__ import annotations

import pytest

from nbagent.agent.actions import ActionParser, MarkdownActionParser, XmlActionParser, get_parser
from nbagent.errors import ConfigError


def parse_xml(text: str, truncated: bool = False) -> tuple[str, str | None, str | None, str | None]:
    parser = XmlActionParser()
    action = parser.parse(parser.close(text, truncated=truncated), truncated=truncated)
    return action.kind, action.think, action.code, action.error


def test_xml_think_then_code() -> None:
    kind, think, code, _ = parse_xml("<think>multiply</think>\n<code>\nprint(17 * 23)\n</code>")
    assert (kind, think, code) == ("code", "multiply", "print(17 * 23)\n")


def test_xml_stop_sequence_cut_is_put_back() -> None:
    parser = XmlActionParser()
    assert parser.stop == ["</code>"]
    text = "<think>x</think><code>x = 1\nx"
    assert parser.close(text) == text + "</code>"
    assert parse_xml(text)[2] == "x = 1\nx\n"


def test_xml_truncated_completion_is_a_format_error() -> None:
    kind, _, code, error = parse_xml("<think>long</think><code>for i in range(", truncated=True)
    assert kind == "format_error"
    assert code is None
    assert error is not None
    assert "token limit" in error


def test_xml_missing_code_names_the_tags() -> None:
    kind, think, _, error = parse_xml("<think>I think the answer is 391.</think>")
    assert kind == "format_error"
    assert think == "I think the answer is 391."
    assert error is not None
    assert "<code>" in error


def test_xml_without_think_tag_uses_leading_text() -> None:
    kind, think, code, _ = parse_xml("Let me compute.\n<code>print(1)</code>")
    assert (kind, think, code) == ("code", "Let me compute.", "print(1)\n")


def test_xml_unclosed_think_before_code() -> None:
    kind, think, code, _ = parse_xml("<think>plan<code>print(2)</code>")
    assert (kind, think, code) == ("code", "plan", "print(2)\n")


def test_xml_empty_code_block() -> None:
    kind, _, _, error = parse_xml("<think>t</think><code>\n  \n</code>")
    assert kind == "format_error"
    assert error is not None
    assert "empty" in error


def test_xml_common_indentation_is_removed() -> None:
    assert (
        parse_xml("<code>\n    a = 1\n    if a:\n        print(a)\n</code>")[2]
        == "a = 1\nif a:\n    print(a)\n"
    )


def parse_md(text: str, truncated: bool = False) -> tuple[str, str | None, str | None, str | None]:
    parser = MarkdownActionParser()
    action = parser.parse(parser.close(text, truncated=truncated), truncated=truncated)
    return action.kind, action.think, action.code, action.error


def test_markdown_text_then_block() -> None:
    kind, think, code, _ = parse_md("I will multiply.\n```python\nprint(17 * 23)\n```\nMore text")
    assert (kind, think, code) == ("code", "I will multiply.", "print(17 * 23)\n")


def test_markdown_prefill_and_stop_cut() -> None:
    # prefill "```python\n" + a completion the server cut at "\n```\n"
    kind, think, code, _ = parse_md("```python\nx = 17 * 23\nprint(x)")
    assert (kind, think, code) == ("code", None, "x = 17 * 23\nprint(x)\n")


@pytest.mark.parametrize("opening", ["```py\n", "```Python\n", "```\n", "``` python3\n"])
def test_markdown_fence_variants(opening: str) -> None:
    assert parse_md(f"{opening}print(1)\n```")[2] == "print(1)\n"


def test_markdown_first_block_is_the_action() -> None:
    assert parse_md("```python\na = 1\n```\n```python\nb = 2\n```")[2] == "a = 1\n"


def test_markdown_no_block() -> None:
    kind, think, _, error = parse_md("The answer is 391.")
    assert kind == "format_error"
    assert think == "The answer is 391."
    assert error is not None
    assert "```python" in error


def test_markdown_truncated() -> None:
    kind, _, _, error = parse_md("```python\nfor i in", truncated=True)
    assert kind == "format_error"
    assert error is not None
    assert "token limit" in error


def test_observations() -> None:
    assert XmlActionParser().observation("391") == "<output>\n391\n</output>"
    assert "391" in MarkdownActionParser().observation("391")


def test_get_parser() -> None:
    assert isinstance(get_parser("xml"), XmlActionParser)
    assert isinstance(get_parser("markdown"), MarkdownActionParser)
    custom = XmlActionParser()
    assert get_parser(custom) is custom
    assert isinstance(custom, ActionParser)
    with pytest.raises(ConfigError, match="Unknown action format 'json'"):
        get_parser("json")  # type: ignore[arg-type]
