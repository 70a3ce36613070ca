"""The IPython shell of nbagent's kernels (`LeanShell`) and `plain_python`: loaded by path, beside
`lean_kernel.py`, by kernels (which import nothing of nbagent); see that file and ``docs/kernel.md``."""

from __future__ import annotations

import re
from typing import Any

from ipykernel.zmqshell import ZMQInteractiveShell
from IPython.core.inputtransformer2 import TransformerManager

_SPECIAL_START = re.compile(r"\s*(?:[%!?,;/]|>>>|\.\.\.|In \[|\[nav\]|\[ins\])")
"""IPython's escapes (``%magic``, ``!command``, ``?obj``, ``,f a``, ``;f a``, ``/f a``) and pasted
prompts (``>>>``, ``...``, ``In [1]:``), at the start of a line."""
_SPECIAL_ASSIGN = re.compile(r"=\s*[%!]")
"""``a = %magic`` and ``a = !command``."""
_STOCK = TransformerManager()  # type: ignore[no-untyped-call]
"""IPython's own transformations, to tell whether a shell's were changed (an extension's added)."""


def plain_python(cell: str) -> bool:
    """Whether IPython's static input transformations would leave `cell` as it is: False wherever
    its syntax (escapes, ``obj?``, ``a = %magic``, pasted prompts), a leading blank line or indent,
    or a line of only blanks (which its dedent empties, in strings too) could be. Lines are
    IPython's (`str.splitlines`: a form feed ends one too). A one-line cell's dynamic
    transformations (automagic, autocall: they depend on the namespace) are not static ones."""
    lines = cell.splitlines()
    return (
        bool(lines)
        and not cell[0].isspace()
        and _SPECIAL_ASSIGN.search(cell) is None
        and not any(
            _SPECIAL_START.match(line) or line.rstrip().endswith("?") or (line and line.isspace())
            for line in lines
        )
    )


class LeanShell(ZMQInteractiveShell):
    """`ZMQInteractiveShell` that knows a cell without the word ``await`` or ``async`` has no
    top-level ``await`` (``async for``, ``async with``) without compiling it a second time, and a
    `plain_python` cell has no static transformation to make, unless transformations were added
    (a one-line cell still goes through IPython's dynamic ones, as in `InteractiveShell`)."""

    def transform_cell(self, raw_cell: str) -> str:
        manager = self.input_transformer_manager
        if (
            not self.input_transformers_post
            and manager.cleanup_transforms == _STOCK.cleanup_transforms
            and manager.line_transforms == _STOCK.line_transforms
            and manager.token_transformers == _STOCK.token_transformers
            and plain_python(raw_cell)
        ):
            static = raw_cell if raw_cell.endswith("\n") else raw_cell + "\n"
            if len(static.splitlines()) == 1:
                with self.builtin_trap:
                    return self.prefilter_manager.prefilter_lines(static) + "\n"  # type: ignore[union-attr,no-any-return]
            return static
        cell: str = super().transform_cell(raw_cell)  # type: ignore[no-untyped-call]
        return cell

    def should_run_async(
        self, raw_cell: str, *, transformed_cell: str | None = None, preprocessing_exc_tuple: Any = None
    ) -> bool:
        if (
            transformed_cell is not None
            and "await" not in transformed_cell
            and "async" not in transformed_cell
        ):
            return False
        answer: bool = super().should_run_async(
            raw_cell, transformed_cell=transformed_cell, preprocessing_exc_tuple=preprocessing_exc_tuple
        )
        return answer
