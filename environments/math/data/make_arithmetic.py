"""Generate the shipped arithmetic task set (``arithmetic.jsonl``): questions answered through Python.

    python environments/math/data/make_arithmetic.py [OUT_DIR]

Each row is ``{"id","problem","answer","metadata"}``; answers are exact integers computed here.
The output is a pure function of the seed.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

SEED = 7
COUNT = 200


def make_row(rng: random.Random, n: int) -> dict[str, object]:
    kind = ["add", "sub", "mul", "div", "mixed", "power", "sum_range"][n % 7]
    if kind == "add":
        a, b = rng.randrange(100, 10_000), rng.randrange(100, 10_000)
        problem, answer = f"What is {a} + {b}?", a + b
    elif kind == "sub":
        a, b = rng.randrange(1000, 20_000), rng.randrange(100, 9_000)
        problem, answer = f"What is {a} - {b}?", a - b
    elif kind == "mul":
        a, b = rng.randrange(12, 999), rng.randrange(12, 99)
        problem, answer = f"What is {a} * {b}?", a * b
    elif kind == "div":
        b, q = rng.randrange(3, 60), rng.randrange(11, 500)
        problem, answer = f"What is {b * q} divided by {b}?", q
    elif kind == "mixed":
        a, b, c = rng.randrange(10, 300), rng.randrange(10, 300), rng.randrange(2, 30)
        problem, answer = f"What is ({a} + {b}) * {c}?", (a + b) * c
    elif kind == "power":
        a, e = rng.randrange(2, 30), rng.randrange(2, 5)
        problem, answer = f"What is {a} to the power of {e}?", a**e
    else:
        a = rng.randrange(1, 50)
        b = a + rng.randrange(10, 400)
        problem, answer = f"What is the sum of all integers from {a} to {b} inclusive?", sum(range(a, b + 1))
    return {
        "id": f"arithmetic-{n:03d}",
        "problem": problem,
        "answer": str(answer),
        "metadata": {"kind": kind},
    }


def generate(out_dir: Path) -> Path:
    rng = random.Random(SEED)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "arithmetic.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for n in range(COUNT):
            f.write(json.dumps(make_row(rng, n)) + "\n")
    return path


if __name__ == "__main__":
    print(f"wrote {generate(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent)}")
