"""Action formats: how a completion becomes an `Action` and how an observation is written back.

Two formats ship: `XmlActionParser` (L0's ``<think>...</think>`` then ``<code>...</code>``, closing tag as
stop sequence, observations in ``<output>...</output>``) and `MarkdownActionParser` (free text then a
fenced ```` ```python ```` block). Anything implementing `ActionParser` can replace them.
"""

from __future__ import annotations

import re
from typing import Literal, Protocol, runtime_checkable

from nbagent.errors import ConfigError
from nbagent.trajectory import Action

ActionFormat = Literal["xml", "markdown"]


@runtime_checkable
class ActionParser(Protocol):
    """Turns the model's text into an `Action` and writes observations in the matching style."""

    name: str
    stop: list[str]
    """Stop sequences to send with every model call (a server removes them from the completion)."""
    instructions: str
    """The "step format" section of the system prompt: how a step must be written, with an example."""

    def close(self, text: str, *, truncated: bool = False) -> str:
        """`text` (prefill + completion) with a stop sequence the server cut off put back, if it was."""
        ...

    def parse(self, text: str, *, truncated: bool = False) -> Action:
        """Parse `text` (prefill + completion, closed by `close`).

        `truncated` is true when the completion hit its token limit. A missing or broken action is
        returned as ``Action(kind="format_error", error=...)`` whose error tells the model what to fix.
        """
        ...

    def observation(self, text: str) -> str:
        """Wrap a cell's rendered output (or a correction) as the next user message."""
        ...


def _cut_off_message(closing: str) -> str:
    return (
        f"Your reply was cut off by the token limit before {closing}, so the code was not run. "
        "Write shorter code in this step (keep large data in variables, not in the code)."
    )


class XmlActionParser:
    """L0's format: ``<think>reasoning</think>`` then ``<code>python</code>``; ``</code>`` stops sampling."""

    name = "xml"

    def __init__(self) -> None:
        self.stop = ["</code>"]
        self.instructions = XML_INSTRUCTIONS

    def close(self, text: str, *, truncated: bool = False) -> str:
        opened = text.rfind("<code>")
        if not truncated and opened != -1 and "</code>" not in text[opened:]:
            return text + "</code>"
        return text

    def parse(self, text: str, *, truncated: bool = False) -> Action:
        start = text.find("<code>")
        think_match = re.search(r"<think>(.*?)(?:</think>|(?=<code>)|\Z)", text, re.DOTALL)
        if think_match:
            think = think_match.group(1).strip() or None
        else:
            think = (text if start == -1 else text[:start]).strip() or None
        if start == -1:
            return Action(
                kind="format_error",
                think=think,
                error=(
                    "No <code> block found. Every step must end with Python code between <code> and "
                    "</code>, after your reasoning in <think>...</think>."
                ),
            )
        end = text.find("</code>", start)
        if end == -1:
            return Action(kind="format_error", think=think, error=_cut_off_message("</code>"))
        code = _dedent_block(text[start + len("<code>") : end])
        if not code.strip():
            return Action(
                kind="format_error",
                think=think,
                error="The <code> block is empty. Put the Python to run between <code> and </code>.",
            )
        return Action(kind="code", think=think, code=code)

    def observation(self, text: str) -> str:
        return f"<output>\n{text}\n</output>"


_FENCE_OPEN = re.compile(r"```[ \t]*(?:python3?|py|ipython)?[ \t]*\n", re.IGNORECASE)
_FENCE_CLOSE = re.compile(r"^[ \t]*```", re.MULTILINE)


class MarkdownActionParser:
    """Reasoning as plain text, then one fenced ```` ```python ```` block; ``\\n```\\n`` stops sampling.

    Works well with small instruction-tuned models, especially with the prefill ```` ```python\\n ````
    (the model then starts directly inside the code block).
    """

    name = "markdown"

    def __init__(self) -> None:
        self.stop = ["\n```\n"]
        self.instructions = MARKDOWN_INSTRUCTIONS

    def close(self, text: str, *, truncated: bool = False) -> str:
        opening = _FENCE_OPEN.search(text)
        if truncated or opening is None:
            return text
        if _FENCE_CLOSE.search(text, opening.end()) is None:
            return text.rstrip("\n") + "\n```\n"
        return text

    def parse(self, text: str, *, truncated: bool = False) -> Action:
        opening = _FENCE_OPEN.search(text)
        think = (text[: opening.start()] if opening else text).strip() or None
        if opening is None:
            return Action(
                kind="format_error",
                think=think,
                error=(
                    "No Python code block found. End every step with code in a fenced block that starts "
                    "with ```python on its own line and ends with ``` on its own line."
                ),
            )
        closing = _FENCE_CLOSE.search(text, opening.end())
        if closing is None:
            return Action(kind="format_error", think=think, error=_cut_off_message("the closing ```"))
        code = _dedent_block(text[opening.end() : closing.start()])
        if not code.strip():
            return Action(
                kind="format_error",
                think=think,
                error="The ```python block is empty. Put the Python to run inside it.",
            )
        return Action(kind="code", think=think, code=code)

    def observation(self, text: str) -> str:
        return f"Output:\n```\n{text}\n```"


def _dedent_block(code: str) -> str:
    """Strip the blank lines around a code block and any indentation common to all its lines."""
    lines = code.strip("\n").splitlines()
    indents = [len(line) - len(line.lstrip()) for line in lines if line.strip()]
    cut = min(indents, default=0)
    return "\n".join(line[cut:] for line in lines).rstrip() + "\n"


def get_parser(action_format: ActionFormat | ActionParser) -> ActionParser:
    """The parser for a format name, or `action_format` itself when it already is a parser."""
    if isinstance(action_format, str):
        if action_format == "xml":
            return XmlActionParser()
        if action_format == "markdown":
            return MarkdownActionParser()
        raise ConfigError(
            f"Unknown action format {action_format!r}: use 'xml', 'markdown' or an ActionParser."
        )
    return action_format


XML_INSTRUCTIONS = """\
Each of your replies is one step: first think, then act.
1. Inside <think>...</think>, reason briefly: what you know, what is missing, what this step will do.
2. Then write Python inside <code>...</code>. It runs at once in the notebook; its printed output and the
   value of its last line come back to you inside <output>...</output> in the next message.
Write exactly one <code> block per reply and stop after </code>.

Example of one step:
<think>I need the product of 17 and 23; I will compute it and print it.</think>
<code>
result = 17 * 23
print(result)
</code>"""

MARKDOWN_INSTRUCTIONS = """\
Each of your replies is one step: first think in a few plain sentences, then act.
Write the Python to run in one fenced block that starts with ```python on its own line and ends with ```
on its own line. It runs at once in the notebook; its printed output and the value of its last line come
back to you in the next message. Write exactly one code block per reply and stop after it.

Example of one step:
I need the product of 17 and 23; I will compute it and print it.
```python
result = 17 * 23
print(result)
```"""
