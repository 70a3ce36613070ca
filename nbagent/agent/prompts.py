"""The texts the agent sends: the system prompt template and the short messages around it.

The system prompt is a replaceable template. Give `Agent(system_prompt=...)` either a string with named
placeholders (``{tools}``, ``{step_format}``, ``{answer}``, ``{max_steps}``, ``{instructions}``; any other
brace is left alone, so JSON examples need no escaping) or a callable that receives a `PromptContext`
and returns the whole prompt.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel


@dataclass(frozen=True)
class PromptContext:
    """Everything a system prompt template can use."""

    tools: str
    """The tools as Python stubs (signature and docstring), `submit_final_answer` included."""
    step_format: str
    """How to write one step, from the action parser."""
    answer: str
    """How to submit the final answer, with the expected type."""
    max_steps: int
    instructions: str = ""
    """Extra instructions from the application or environment (may be empty)."""

    def fields(self) -> dict[str, str]:
        return {
            "tools": self.tools,
            "step_format": self.step_format,
            "answer": self.answer,
            "max_steps": str(self.max_steps),
            "instructions": self.instructions,
        }


SystemPromptTemplate = str | Callable[[PromptContext], str]

_PLACEHOLDER = re.compile(r"\{(tools|step_format|answer|max_steps|instructions)\}")


def render_system_prompt(template: SystemPromptTemplate, ctx: PromptContext) -> str:
    """Fill `template` with `ctx`: a string's known ``{placeholders}`` are replaced, a callable is called."""
    if callable(template):
        text = template(ctx)
        if not isinstance(text, str):
            raise TypeError(f"The system prompt callable returned {type(text).__name__}; it must return str.")
        return text
    values = ctx.fields()
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template).strip()


DEFAULT_SYSTEM_PROMPT = """\
You are an agent that solves tasks by working in a live Python notebook, step by step.

## Your responsibility
Solve the task you are given completely and correctly. You act only by writing Python code; the code runs
in a persistent Jupyter kernel, so variables, imports and functions you define stay available in later
steps. Look things up and compute instead of guessing. You have at most {max_steps} steps.

## Manage your memory
Old steps may be removed from this conversation when it grows long, but the kernel keeps its variables
and a `notepad` object is always shown to you at the end of the latest message. Use it from your code:
- `notepad.add_todo(["first thing to do", "second thing"])` adds items to your plan;
- `notepad.mark_done(1)` marks todo item 1 (numbered from 1) as done;
- `notepad.add_facts(["a fact you verified", ...])` records what you learned, with its source;
- `notepad.write_draft("text")` replaces your draft answer.
Keep big data (pages, tables, long lists) in Python variables and print only what you need to read.

## Step format
{step_format}

## Plan
Start with a short plan in the notepad. After each step, check the output: did it do what you expected?
Fix errors by reading the traceback and changing the code; do not repeat a failing step unchanged.

## Submitting the answer
{answer}
Calling it ends the task; call it only once you are confident, and in a step of its own or at the end of
a step whose other code already worked.

## Tools
These Python functions are already defined in the notebook. Call them directly from your code (do not
import or redefine them):
```python
{tools}
```

## Code quality
Write short, plain Python. Print the values you need to see, with labels. Use the standard library and
installed packages; handle the cases where a tool returns nothing. Do not use input() or open interactive
windows: nobody can answer them.

## Rules
- Every reply is exactly one step in the format above.
- Base your answer on what your code showed you, not on what you assume.
- If the task cannot be solved, submit your best answer and say what is uncertain.
{instructions}"""

TASK_TEMPLATE = "Task: {task}"

NOTEPAD_HEADER = "Your notepad (always shown here, at the end):"

TRIMMED_NOTE = (
    "[Steps {steps} were removed from this conversation to fit the context budget. The kernel still "
    "holds the variables they created, and your notepad below keeps what you saved.]"
)

SUMMARY_NOTE = (
    "[Summary of the earlier steps {steps}, which were removed to fit the context budget:]\n{summary}"
)

SUMMARIZE_SYSTEM_PROMPT = """\
You condense the history of an agent that solves a task in a Python notebook. Write a short summary of
the steps below: what was tried, the facts and numbers that were found (exactly, with their source),
which variables hold useful data, and what failed. Write plain text, at most about 200 words."""

LAST_STEP_NOTE = "This is your last step: submit your final answer now with submit_final_answer(...)."

RESTART_NOTE = (
    "(The kernel was restarted: your tools and the notepad are defined again; other variables are gone.)"
)

EMPTY_OUTPUT_NOTE = "(no output: the cell printed nothing; print() the values you want to see)"

REPEAT_NOTE = (
    "(You ran exactly the same code as in the previous step, so you got the same result. "
    "Change your approach, or submit your answer.)"
)

FORMAT_ERROR_NOTE = "Your reply could not be run: {error}"


def answer_instructions(output_type: Any) -> str:
    """The "answer submission" section for an output type (str or a pydantic model class)."""
    if isinstance(output_type, type) and issubclass(output_type, BaseModel):
        schema = json.dumps(output_type.model_json_schema(), indent=1)
        return (
            "When you know the answer, call `submit_final_answer(answer)` from your code, where `answer` is "
            f"a dict (or keyword arguments) matching this JSON schema of `{output_type.__name__}`:\n"
            f"{schema}\nIf it does not match, you get the validation error and can submit again."
        )
    if output_type is str:
        return (
            "When you know the answer, call `submit_final_answer(answer)` from your code with the answer "
            "as a short string (a number may be passed as it is)."
        )
    name = getattr(output_type, "__name__", repr(output_type))
    return (
        f"When you know the answer, call `submit_final_answer(answer)` from your code, with `answer` of "
        f"type `{name}`. If it has the wrong type, you get the error and can submit again."
    )
