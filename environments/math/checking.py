"""Math answer checking: is a predicted answer equivalent to the reference?

Answers are compared as text first, then as exact numbers (integers, decimals, fractions, percents,
thousands separators), then as sympy expressions (``simplify(a - b) == 0``). A LaTeX-lite layer reads
``\\boxed{}``, ``\\frac{a}{b}``, ``\\sqrt{}``, ``\\cdot``, ``\\pi`` and friends, and GSM8K's ``#### 42``.

Model output is untrusted, and sympy's parser evaluates Python, so only a safe alphabet reaches it:
digits, operators, brackets, single-letter symbols and a short list of function names; exponent towers
and huge exponents are refused (the answer then counts as not equivalent).
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any

__all__ = ["answers_equivalent", "extract_final_answer", "parse_number", "to_sympy"]

_FUNCTIONS = {"sqrt", "pi", "sin", "cos", "tan", "log", "ln", "exp", "oo"}
_SAFE = re.compile(r"[0-9a-zA-Z+\-*/^().,= ]*")
_MAX_CHARS = 200


def _last_braced(text: str, command: str) -> str | None:
    """The content of the last ``\\command{...}`` in `text` (balanced braces), or None."""
    start = text.rfind("\\" + command + "{")
    if start < 0:
        return None
    i = start + len(command) + 2
    depth = 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j]
    return None


def extract_final_answer(text: str) -> str:
    """The answer part of a model's or dataset's answer text.

    The last ``\\boxed{...}`` wins, then a GSM8K ``#### answer`` line, then text after "answer is";
    otherwise the whole text. Surrounding ``$``, ``\\(``/``\\)`` and a final period are removed.
    """
    boxed = _last_braced(text, "boxed") or _last_braced(text, "fbox")
    if boxed is not None:
        text = boxed
    elif "####" in text:
        text = text.rsplit("####", 1)[1]
    else:
        match = re.search(r"answer is[:\s]*(.+)$", text, flags=re.IGNORECASE | re.DOTALL)
        if match:
            text = match.group(1)
    text = text.strip()
    for left, right in (("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if text.startswith(left) and text.endswith(right) and len(text) >= len(left) + len(right):
            text = text[len(left) : len(text) - len(right)].strip()
    return text.rstrip(".").strip()


def _latex_frac(text: str) -> str:
    """Rewrite ``\\frac{a}{b}`` (also nested, and ``\\frac12``) as ``((a)/(b))``."""
    while True:
        start = text.find("\\frac")
        if start < 0:
            return text
        args: list[str] = []
        i = start + len("\\frac")
        for _ in range(2):
            while i < len(text) and text[i] == " ":
                i += 1
            if i < len(text) and text[i] == "{":
                depth, j = 1, i + 1
                while j < len(text) and depth:
                    depth += {"{": 1, "}": -1}.get(text[j], 0)
                    j += 1
                if depth:
                    return text  # unbalanced: leave it, parsing will refuse it
                args.append(text[i + 1 : j - 1])
                i = j
            elif i < len(text):
                args.append(text[i])
                i += 1
            else:
                return text
        text = text[:start] + f"(({args[0]})/({args[1]}))" + text[i:]


def _delatex(text: str) -> str:
    """LaTeX-lite to plain math: fractions, roots, operators, constants, spacing commands."""
    for old, new in (("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("\\left", ""), ("\\right", "")):
        text = text.replace(old, new)
    text = _latex_frac(text)
    text = re.sub(r"\\sqrt\[([^\]]+)\]\{([^{}]*)\}", r"((\2)^(1/(\1)))", text)
    text = re.sub(r"\\sqrt\{([^{}]*)\}", r"sqrt(\1)", text)
    text = re.sub(r"\\sqrt(\d)", r"sqrt(\1)", text)
    replacements = {
        "\\cdot": "*", "\\times": "*", "\\div": "/", "\\pi": " pi ", "\\infty": " oo ", "^\\circ": "",
        "\\%": "%", "\\!": "", "\\,": "", "\\;": "", "\\:": "", "\\ ": " ", "\\$": "",
    }  # fmt: skip
    for old, new in replacements.items():
        text = text.replace(old, new)
    text = re.sub(r"\\(?:text|mathrm|mbox|textbf)\{([^{}]*)\}", r"\1", text)
    text = re.sub(r"\\([A-Za-z]+)", r" \1 ", text)  # \sin -> sin; unknown commands are refused later
    return text.replace("{", "(").replace("}", ")")


def parse_number(text: str) -> Fraction | None:
    """An exact number from plain text: ``42``, ``-3.5``, ``1,234``, ``3/4``, ``50%``, ``$12``; else None."""
    s = text.strip().replace("$", "").replace(" ", "")
    percent = s.endswith("%")
    s = s.rstrip("%")
    if re.fullmatch(r"[-+]?\d{1,3}(,\d{3})+(\.\d+)?", s):
        s = s.replace(",", "")
    try:
        value = Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None
    return value / 100 if percent else value


def _safe_for_sympy(text: str) -> bool:
    if len(text) > _MAX_CHARS or not _SAFE.fullmatch(text) or "__" in text:
        return False
    if any(len(word) > 1 and word not in _FUNCTIONS for word in re.findall(r"[A-Za-z]+", text)):
        return False
    exponents = re.findall(r"(?:\*\*|\^)\s*(\(?[^+\-*/^()]*)", text)
    if len(exponents) > 4 or re.search(r"(\*\*|\^)\s*\([^()]*(\*\*|\^)", text):
        return False  # towers like 9^(9^9) could run for hours
    return all(len(re.sub(r"\D", "", e)) <= 3 for e in exponents)


def to_sympy(text: str) -> Any | None:
    """A sympy expression for `text` (LaTeX-lite allowed), or None when it is not safe or not math."""
    from sympy.parsing.sympy_parser import (
        convert_xor,
        implicit_multiplication_application,
        parse_expr,
        standard_transformations,
    )

    plain = _delatex(text).replace("%", "/100").replace("ln", "log")
    if plain.count("=") == 1:  # "x = 3" -> "3"
        plain = plain.split("=")[1]
    plain = plain.strip()
    if not plain or not _safe_for_sympy(plain):
        return None
    transformations = (*standard_transformations, implicit_multiplication_application, convert_xor)
    try:
        return parse_expr(plain, transformations=transformations, evaluate=True)
    except (SyntaxError, TypeError, ValueError, AttributeError, ZeroDivisionError, OverflowError):
        return None


def _split_items(text: str) -> list[str]:
    """Top-level comma-separated items (thousands separators are not split)."""
    if parse_number(text) is not None:
        return [text]
    items, depth, current = [], 0, ""
    for ch in text:
        depth += {"(": 1, "[": 1, "{": 1, ")": -1, "]": -1, "}": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += ch
    items.append(current)
    return [item.strip() for item in items]


def _equivalent_item(pred: str, ref: str, rel_tol: float) -> bool:
    if pred.replace(" ", "").lower() == ref.replace(" ", "").lower():
        return True
    a_num, b_num = parse_number(_delatex(pred)), parse_number(_delatex(ref))
    if a_num is not None and b_num is not None:
        return a_num == b_num or abs(a_num - b_num) <= Fraction(rel_tol) * max(Fraction(1), abs(b_num))
    a, b = to_sympy(pred), to_sympy(ref)
    if a is None or b is None:
        return False
    import sympy

    try:
        if a.is_number and b.is_number:
            diff = complex(sympy.N(a - b))
            return abs(diff) <= rel_tol * max(1.0, abs(complex(sympy.N(b))))
        return bool(sympy.simplify(a - b) == 0)
    except (TypeError, ValueError, AttributeError, OverflowError):
        return False


def answers_equivalent(prediction: Any, reference: Any, *, rel_tol: float = 1e-6) -> bool:
    """Whether `prediction` and `reference` denote the same answer (numbers, fractions, expressions).

    Both go through `extract_final_answer` first. Comma-separated answers are compared item by item.
    Numbers match exactly, or within `rel_tol` relative difference for decimals that were rounded.
    """
    if prediction is None:
        return False
    pred, ref = extract_final_answer(str(prediction)), extract_final_answer(str(reference))
    if not pred:
        return False
    pred_items, ref_items = _split_items(pred), _split_items(ref)
    if len(pred_items) != len(ref_items):
        return False
    return all(_equivalent_item(p, r, rel_tol) for p, r in zip(pred_items, ref_items, strict=True))
