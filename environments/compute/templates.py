"""The question templates of the compute task set, and the generator of its shipped split files.

Every template makes a question that Python answers exactly, its answer, and a reference solution (the
code a careful agent would run). Templates marked ``seen`` give tasks to every split; the others give
tasks to ``test`` only, so the test split measures generalisation to question kinds never trained on.

    python -m nbagent_environments.compute.templates [OUT_DIR]    # rewrites data/{train,dev,test}.jsonl

The output is a pure function of `SEED` and the counts below.
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

SEED = 20261202
SEEN_COUNTS = {"train": 16, "dev": 2, "test": 3}
"""Tasks per seen template in each split."""
UNSEEN_TEST_COUNT = 4
"""Tasks per test-only template."""
DEMO_QUESTION = "What is 17 * 23? Use Python."
"""`scripts/demo`'s question: no split may hold it (its operands are never drawn)."""

WORDS = (
    "banana",
    "notebook",
    "kernel",
    "mississippi",
    "parallel",
    "committee",
    "balloon",
    "bookkeeper",
    "cassette",
    "referee",
    "tomorrow",
    "assessment",
    "abbreviation",
    "occurrence",
    "programming",
    "accommodate",
    "necessary",
    "successful",
    "embarrass",
    "millennium",
    "possession",
    "questionnaire",
    "address",
    "coffee",
    "giraffe",
    "hippopotamus",
    "letter",
    "pepper",
    "sleeve",
    "tennessee",
)


@dataclass(frozen=True)
class Made:
    question: str
    answer: str
    solution: str
    """Python that computes the answer into `answer` and prints it."""
    kind: str = "number"
    """``number`` (compared numerically) or ``text`` (compared exactly, surrounding space ignored)."""


@dataclass(frozen=True)
class Template:
    name: str
    group: str
    seen: bool
    make: Callable[[random.Random], Made]


def _num(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def _expr(question: str, expression: str, *, setup: str = "") -> Made:
    """A question answered by one Python expression (after optional set-up lines)."""
    code = f"{setup}answer = {expression}\nprint(answer)\n"
    return Made(question, _num(solve(code)), code)


def solve(code: str) -> Any:
    """Run a reference solution (our own template code) and return its `answer`."""
    namespace: dict[str, Any] = {"print": lambda *args: None}
    exec(code, namespace)
    return namespace["answer"]


def _pair(rng: random.Random, low: int, high: int) -> tuple[int, int]:
    while True:
        a, b = rng.randrange(low, high), rng.randrange(low, high)
        if {a, b} != {17, 23}:
            return a, b


def _values(rng: random.Random) -> list[int]:
    return [rng.randrange(2, 100) for _ in range(rng.randrange(5, 8))]


def _listed(values: list[int]) -> str:
    return ", ".join(str(v) for v in values[:-1]) + f" and {values[-1]}"


def _day(rng: random.Random) -> date:
    return date(2000, 1, 1) + timedelta(days=rng.randrange(0, 9000))


def _word(rng: random.Random) -> str:
    return rng.choice(WORDS)


# -- arithmetic ----------------------------------------------------------------------------------------


def _add(rng: random.Random) -> Made:
    a, b = _pair(rng, 1000, 99_999)
    return _expr(f"What is {a} + {b}?", f"{a} + {b}")


def _mul(rng: random.Random) -> Made:
    a, b = _pair(rng, 12, 999)
    return _expr(f"What is {a} * {b}?", f"{a} * {b}")


def _subtract_from(rng: random.Random) -> Made:
    a, b = rng.randrange(5000, 99_999), rng.randrange(100, 4999)
    return _expr(f"Subtract {b} from {a}.", f"{a} - {b}")


def _divided(rng: random.Random) -> Made:
    b, q = rng.randrange(3, 90), rng.randrange(11, 999)
    return _expr(f"What is {b * q} divided by {b}?", f"{b * q} // {b}")


def _mixed(rng: random.Random) -> Made:
    a, b, c = rng.randrange(10, 500), rng.randrange(10, 500), rng.randrange(2, 40)
    return _expr(f"Compute ({a} + {b}) * {c}.", f"({a} + {b}) * {c}")


def _power(rng: random.Random) -> Made:
    a, e = rng.randrange(2, 40), rng.randrange(3, 6)
    return _expr(f"What is {a} to the power of {e}?", f"{a} ** {e}")


def _product_of(rng: random.Random) -> Made:
    a, b = _pair(rng, 12, 999)
    return _expr(f"What is the product of {a} and {b}?", f"{a} * {b}")


def _how_much_minus(rng: random.Random) -> Made:
    a, b = rng.randrange(5000, 99_999), rng.randrange(100, 4999)
    return _expr(f"How much is {a} minus {b}?", f"{a} - {b}")


def _multiply_then_add(rng: random.Random) -> Made:
    a, b, c = rng.randrange(12, 300), rng.randrange(12, 99), rng.randrange(100, 999)
    return _expr(f"Multiply {a} by {b}, then add {c}.", f"{a} * {b} + {c}")


# -- units and time ----------------------------------------------------------------------------------


def _minutes_in_hours(rng: random.Random) -> Made:
    h = rng.randrange(3, 200)
    return _expr(f"How many minutes are in {h} hours?", f"{h} * 60")


def _seconds_in(rng: random.Random) -> Made:
    h, m = rng.randrange(1, 24), rng.randrange(1, 60)
    return _expr(f"How many seconds are in {h} hours and {m} minutes?", f"{h} * 3600 + {m} * 60")


def _km_to_m(rng: random.Random) -> Made:
    km = rng.randrange(11, 999) / 10
    return _expr(f"How many meters are in {km} kilometers?", f"round({km} * 1000)")


def _hours_in_days(rng: random.Random) -> Made:
    d = rng.randrange(3, 400)
    return _expr(f"How many hours are in {d} days?", f"{d} * 24")


# -- dates -----------------------------------------------------------------------------------------------

_DATE_SETUP = "from datetime import date, timedelta\n"


def _days_between(rng: random.Random) -> Made:
    first = _day(rng)
    second = first + timedelta(days=rng.randrange(20, 2000))
    return _expr(
        f"How many days are there from {first.isoformat()} to {second.isoformat()}?",
        f'(date.fromisoformat("{second.isoformat()}") - date.fromisoformat("{first.isoformat()}")).days',
        setup=_DATE_SETUP,
    )


def _weekday(rng: random.Random) -> Made:
    day = _day(rng)
    code = f'{_DATE_SETUP}answer = date.fromisoformat("{day.isoformat()}").strftime("%A")\nprint(answer)\n'
    return Made(f"What day of the week was {day.isoformat()}?", solve(code), code, "text")


def _days_after(rng: random.Random) -> Made:
    day, n = _day(rng), rng.randrange(10, 400)
    code = (
        f'{_DATE_SETUP}answer = (date.fromisoformat("{day.isoformat()}") + timedelta(days={n})).isoformat()\n'
        "print(answer)\n"
    )
    return Made(
        f"What date is {n} days after {day.isoformat()}? Answer as YYYY-MM-DD.", solve(code), code, "text"
    )


# -- counting and strings --------------------------------------------------------------------------------


def _count_letter(rng: random.Random) -> Made:
    word = _word(rng)
    letter = rng.choice(sorted(set(word)))
    return _expr(
        f'How many times does the letter "{letter}" appear in "{word}"?', f'"{word}".count("{letter}")'
    )


def _reverse(rng: random.Random) -> Made:
    word = _word(rng)
    code = f'answer = "{word}"[::-1]\nprint(answer)\n'
    return Made(f'Reverse the word "{word}".', solve(code), code, "text")


def _sort_letters(rng: random.Random) -> Made:
    word = _word(rng)
    code = f'answer = "".join(sorted("{word}"))\nprint(answer)\n'
    return Made(f'Sort the letters of "{word}" alphabetically.', solve(code), code, "text")


def _length(rng: random.Random) -> Made:
    words = " ".join(rng.sample(WORDS, 3))
    return _expr(f'How many characters are in the text "{words}"?', f'len("{words}")')


def _vowels(rng: random.Random) -> Made:
    word = _word(rng)
    return _expr(f'How many vowels are in "{word}"?', f'sum(ch in "aeiou" for ch in "{word}")')


# -- number theory ---------------------------------------------------------------------------------------


def _remainder(rng: random.Random) -> Made:
    a, b = rng.randrange(1000, 99_999), rng.randrange(3, 97)
    return _expr(f"What is the remainder when {a} is divided by {b}?", f"{a} % {b}")


def _gcd(rng: random.Random) -> Made:
    g = rng.randrange(2, 40)
    a, b = g * rng.randrange(2, 60), g * rng.randrange(2, 60)
    return _expr(
        f"What is the greatest common divisor of {a} and {b}?", f"math.gcd({a}, {b})", setup="import math\n"
    )


def _primes_below(rng: random.Random) -> Made:
    n = rng.randrange(30, 600)
    return _expr(
        f"How many prime numbers are there below {n}?",
        f"sum(1 for k in range(2, {n}) if all(k % d for d in range(2, int(k ** 0.5) + 1)))",
    )


def _digit_sum(rng: random.Random) -> Made:
    n = rng.randrange(10_000, 99_999_999)
    return _expr(f"What is the sum of the digits of {n}?", f"sum(int(d) for d in str({n}))")


def _lcm(rng: random.Random) -> Made:
    a, b = rng.randrange(4, 200), rng.randrange(4, 200)
    return _expr(
        f"What is the least common multiple of {a} and {b}?", f"math.lcm({a}, {b})", setup="import math\n"
    )


# -- statistics ------------------------------------------------------------------------------------------


def _stat(question: str, expression: str) -> Callable[[random.Random], Made]:
    def make(rng: random.Random) -> Made:
        values = _values(rng)
        return _expr(
            question.format(values=_listed(values)),
            expression.format(values=values),
            setup="import statistics\n" if "statistics" in expression else "",
        )

    return make


TEMPLATES: tuple[Template, ...] = (
    Template("add", "arithmetic", True, _add),
    Template("multiply", "arithmetic", True, _mul),
    Template("subtract_from", "arithmetic", True, _subtract_from),
    Template("divided_by", "arithmetic", True, _divided),
    Template("sum_times", "arithmetic", True, _mixed),
    Template("power", "arithmetic", True, _power),
    Template("minutes_in_hours", "units", True, _minutes_in_hours),
    Template("seconds_in", "units", True, _seconds_in),
    Template("km_to_m", "units", True, _km_to_m),
    Template("days_between", "dates", True, _days_between),
    Template("weekday", "dates", True, _weekday),
    Template("count_letter", "strings", True, _count_letter),
    Template("reverse", "strings", True, _reverse),
    Template("sort_letters", "strings", True, _sort_letters),
    Template("length", "strings", True, _length),
    Template("remainder", "number_theory", True, _remainder),
    Template("gcd", "number_theory", True, _gcd),
    Template("primes_below", "number_theory", True, _primes_below),
    Template("digit_sum", "number_theory", True, _digit_sum),
    Template("mean", "statistics", True, _stat("What is the mean of {values}?", "statistics.mean({values})")),
    Template(
        "median", "statistics", True, _stat("What is the median of {values}?", "statistics.median({values})")
    ),
    Template(
        "range",
        "statistics",
        True,
        _stat("What is the largest minus the smallest of {values}?", "max({values}) - min({values})"),
    ),
    # Test only: new phrasings of seen operations, and operations never trained on.
    Template("product_of", "arithmetic", False, _product_of),
    Template("how_much_minus", "arithmetic", False, _how_much_minus),
    Template("multiply_then_add", "arithmetic", False, _multiply_then_add),
    Template("hours_in_days", "units", False, _hours_in_days),
    Template("days_after", "dates", False, _days_after),
    Template("vowels", "strings", False, _vowels),
    Template("lcm", "number_theory", False, _lcm),
    Template("sum_of", "statistics", False, _stat("What is the sum of {values}?", "sum({values})")),
    Template(
        "average_of",
        "statistics",
        False,
        _stat("What is the average of {values}?", "statistics.mean({values})"),
    ),
)


def generate() -> dict[str, list[dict[str, Any]]]:
    """The rows of every split: each template's tasks, drawn without repeating a question anywhere."""
    rng = random.Random(SEED)
    splits: dict[str, list[dict[str, Any]]] = {"train": [], "dev": [], "test": []}
    asked = {DEMO_QUESTION}
    for template in TEMPLATES:
        counts = SEEN_COUNTS if template.seen else {"test": UNSEEN_TEST_COUNT}
        for split, count in counts.items():
            made = 0
            while made < count:
                task = template.make(rng)
                if task.question in asked:
                    continue
                asked.add(task.question)
                splits[split].append(
                    {
                        "id": f"compute-{split}-{template.name}-{made}",
                        "question": task.question,
                        "answer": task.answer,
                        "kind": task.kind,
                        "template": template.name,
                        "group": template.group,
                        "seen": template.seen,
                        "solution": task.solution,
                    }
                )
                made += 1
    return splits


def write(out: Path) -> None:
    """Write `generate()` as ``OUT/{train,dev,test}.jsonl``."""
    out.mkdir(parents=True, exist_ok=True)
    for split, rows in generate().items():
        (out / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


if __name__ == "__main__":
    write(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "data")
