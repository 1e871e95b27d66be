"""Math problems with reference step-by-step solutions and checkable final answers (offline).

Four categories, all generated from a seed with no model or hub:

==============  =============================================================================
category        example (``steps=2``)
==============  =============================================================================
``arithmetic``  ``Compute (7 + 5) × 3.`` -> ``7 + 5 = 12`` / ``12 × 3 = 36``; answer ``36``
``fractions``   ``Compute (1/2 + 1/3) × 3/4.`` -> ``1/2 + 1/3 = 3/6 + 2/6 = 5/6`` / ...; ``5/8``
``word``        ``Mia has 12 apples. She buys 5 more. Then she gives 3 away. How many ...?``
``units``       ``Convert 3 km to cm.`` -> ``3 km = 3 × 1000 m = 3000 m`` / ...; ``300000 cm``
==============  =============================================================================

Problem rows (JSON-serialisable)::

    {"id": "math-1f0c...", "category": "arithmetic", "question": "Compute (7 + 5) × 3.",
     "steps": ["7 + 5 = 12", "12 × 3 = 36"], "answer": "36",
     "program": {"start": "7", "ops": [["+", "5"], ["×", "3"]], "notes": null, "units": null}}

``answer`` is canonical: an integer (``36``), a reduced fraction (``5/8``), or a number and unit
(``300000 cm``, ``4.5 km``). ``program`` is the machine-readable solution; :func:`solve` renders it
into steps, and with ``slip=(k, delta)`` makes a *wrong* solution whose step ``k`` is off by
``delta`` and whose later steps carry the error forward (negatives for PRM / critique data).

Difficulty is two knobs: ``steps`` (operations per problem; unit chains are capped at the length of
their table) and ``max_operand`` (largest operand). ``LEVELS`` names four presets; level 1
(one operation, operands ≤ 10) is within reach of a 135M chat model.

Splits are by a hash of the problem id (:func:`alignkit.data.verifiable.is_heldout`), so a problem's
split never depends on how many problems were asked for, and a larger request extends a smaller one.

Answer checking (:func:`extract_final_answer`, :func:`check_answer`): the final answer of a
free-text solution is, in order of precedence, the last ``\\boxed{...}``, the last
``answer is X`` / ``Answer: X`` / ``#### X``, else the last number in the text; a number may be an
integer, a decimal, ``1,000``-style, a fraction ``a/b`` or ``\\frac{a}{b}``, optionally followed by a
unit. Two answers are equal when their values are exactly equal (``0.5 == 1/2``); a unit, when the
text gives one, must be convertible to the reference unit (``3 km`` equals ``3000 m``).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from alignkit.config import StrictModel
from alignkit.data.verifiable import is_heldout, route_split  # noqa: F401 (is_heldout: part of this module's API)

CATEGORIES = ("arithmetic", "fractions", "word", "units")

# level -> (steps, max_operand)
LEVELS: dict[int, tuple[int, int]] = {1: (1, 10), 2: (2, 20), 3: (3, 50), 4: (4, 100)}

# The instruction appended to every prompt, so the expected output format is stated, not guessed.
INSTRUCTION = "Solve it step by step, one step per line, and finish with \"The answer is X.\""

# Unit chains, largest first: (unit, factor to the next unit). Conversions walk along one chain.
UNIT_CHAINS: dict[str, list[tuple[str, int]]] = {
    "length": [("km", 1000), ("m", 100), ("cm", 10), ("mm", 1)],
    "mass": [("t", 1000), ("kg", 1000), ("g", 1000), ("mg", 1)],
    "time": [("h", 60), ("min", 60), ("s", 1)],
    "volume": [("kL", 1000), ("L", 1000), ("mL", 1)],
}
UNIT_ALIASES: dict[str, str] = {
    "km": "km", "kilometre": "km", "kilometres": "km", "kilometer": "km", "kilometers": "km",
    "m": "m", "metre": "m", "metres": "m", "meter": "m", "meters": "m",
    "cm": "cm", "centimetre": "cm", "centimetres": "cm", "centimeter": "cm", "centimeters": "cm",
    "mm": "mm", "millimetre": "mm", "millimetres": "mm", "millimeter": "mm", "millimeters": "mm",
    "t": "t", "tonne": "t", "tonnes": "t", "ton": "t", "tons": "t",
    "kg": "kg", "kilogram": "kg", "kilograms": "kg", "g": "g", "gram": "g", "grams": "g",
    "mg": "mg", "milligram": "mg", "milligrams": "mg",
    "h": "h", "hr": "h", "hrs": "h", "hour": "h", "hours": "h",
    "min": "min", "mins": "min", "minute": "min", "minutes": "min",
    "s": "s", "sec": "s", "secs": "s", "second": "s", "seconds": "s",
    "kl": "kL", "kilolitre": "kL", "kilolitres": "kL", "kiloliter": "kL", "kiloliters": "kL",
    "l": "L", "litre": "L", "litres": "L", "liter": "L", "liters": "L",
    "ml": "mL", "millilitre": "mL", "millilitres": "mL", "milliliter": "mL", "milliliters": "mL",
}

# (name, subject pronoun, object pronoun)
_NAMES = (("Mia", "She", "her"), ("Sam", "He", "him"), ("Ana", "She", "her"), ("Leo", "He", "him"),
          ("Zoe", "She", "her"), ("Omar", "He", "him"), ("Ivy", "She", "her"), ("Ben", "He", "him"))
_ITEMS = ("apples", "marbles", "stickers", "books", "coins", "pencils", "cards", "shells")
# Word-problem phrasing per operation: (sentence in the question, note in the solution step).
_WORD_OPS: dict[str, tuple[tuple[str, str], ...]] = {
    "+": (("{P} buys {b} more.", "buys {b} more"), ("A friend gives {o} {b} more.", "gets {b} more")),
    "-": (("{P} gives {b} away.", "gives {b} away"), ("{P} loses {b} of them.", "loses {b}")),
    "×": (("{P} ends up with {b} times as many.", "{b} times as many"),
          ("Each one is swapped for {b} new ones.", "each swapped for {b}")),
    "÷": (("{P} shares them equally among {b} boxes and keeps one box.", "one of {b} equal boxes"),
          ("{P} keeps only one of every {b}.", "one of every {b}")),
}


# ----------------------------------------------------------------------------------------- numbers

def fmt_number(x: Fraction) -> str:
    """Canonical text of a value: ``12``, ``5/8``, or a terminating decimal for unit amounts."""
    if x.denominator == 1:
        return str(x.numerator)
    return f"{x.numerator}/{x.denominator}"


def fmt_decimal(x: Fraction) -> str:
    """``Fraction(9, 2)`` -> ``4.5``; falls back to ``a/b`` when the decimal does not terminate."""
    if x.denominator == 1:
        return str(x.numerator)
    d = x.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    if d != 1:
        return fmt_number(x)
    text = f"{float(x):.12f}".rstrip("0").rstrip(".")
    return text if Fraction(text) == x else fmt_number(x)


def _apply(a: Fraction, op: str, b: Fraction) -> Fraction:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "×":
        return a * b
    if op == "÷":
        return a / b
    raise ValueError(f"unknown operation {op!r}")


# ------------------------------------------------------------------------------------- generators

def _int_ops(rng: random.Random, start: int, steps: int, max_operand: int) -> list[tuple[str, int]]:
    """Integer operations that keep every intermediate value a non-negative integer."""
    cur, ops = start, []
    small = max(2, min(9, max_operand))
    for _ in range(steps):
        choices = ["+", "×"] + (["-"] if cur > 1 else [])
        divisors = [d for d in range(2, small + 1) if cur % d == 0 and cur // d > 0]
        if divisors:
            choices.append("÷")
        op = rng.choice(choices)
        if op == "+":
            b = rng.randint(1, max_operand)
        elif op == "-":
            b = rng.randint(1, min(cur - 1, max_operand))
        elif op == "×":
            b = rng.randint(2, small)
        else:
            b = rng.choice(divisors)
        ops.append((op, b))
        cur = int(_apply(Fraction(cur), op, Fraction(b)))
    return ops


def _expression(start: str, ops: Sequence[tuple[str, str]]) -> str:
    """Left-to-right expression with the parentheses the usual precedence needs."""
    # Every operation's left side is the whole expression so far, so only "(a + b) × c" needs
    # parentheses; after appending, the new operator is the expression's top-level operator.
    expr, top = start, None
    for op, b in ops:
        if op in "×÷" and top in ("+", "-"):
            expr = f"({expr})"
        expr, top = f"{expr} {op} {b}", op
    return expr


def _gen_arithmetic(rng, steps, max_operand) -> tuple[str, dict[str, Any]]:
    start = rng.randint(1, max_operand)
    ops = [(op, str(b)) for op, b in _int_ops(rng, start, steps, max_operand)]
    return f"Compute {_expression(str(start), ops)}.", {"start": str(start), "ops": ops}


def _rand_fraction(rng: random.Random, max_operand: int) -> Fraction:
    """A proper-looking fraction (never a whole number), denominator 2..12, numerator < 2·den."""
    while True:
        den = rng.randint(2, max(2, min(12, max_operand)))
        x = Fraction(rng.randint(1, max(1, min(max_operand, 2 * den - 1))), den)
        if x.denominator != 1:
            return x


def _gen_fractions(rng, steps, max_operand) -> tuple[str, dict[str, Any]]:
    cur = start = _rand_fraction(rng, max_operand)
    ops: list[tuple[str, str]] = []
    for _ in range(steps):
        b = _rand_fraction(rng, max_operand)
        op = rng.choice(["+", "-", "×"] if cur > b else ["+", "×"])
        ops.append((op, fmt_number(b)))
        cur = _apply(cur, op, b)
    return f"Compute {_expression(fmt_number(start), ops)}.", {"start": fmt_number(start), "ops": ops}


def _gen_word(rng, steps, max_operand) -> tuple[str, dict[str, Any]]:
    name, pron, obj = rng.choice(_NAMES)
    item = rng.choice(_ITEMS)
    start = rng.randint(2, max(2, max_operand))
    sentences, notes, ops = [f"{name} has {start} {item}."], [], []
    for op, b in _int_ops(rng, start, steps, max_operand):
        sentence, note = rng.choice(_WORD_OPS[op])
        sentences.append(sentence.format(P=pron, o=obj, b=b))
        notes.append(note.format(b=b))
        ops.append((op, str(b)))
    question = " ".join(sentences) + f" How many {item} does {name} have now?"
    return question, {"start": str(start), "ops": ops, "notes": notes}


def _gen_units(rng, steps, max_operand) -> tuple[str, dict[str, Any]]:
    chain = UNIT_CHAINS[rng.choice(sorted(UNIT_CHAINS))]
    hops = min(steps, len(chain) - 1)
    i = rng.randint(0, len(chain) - 1 - hops)
    seg = chain[i : i + hops + 1]
    factors = [f for _, f in seg[:-1]]
    units = [u for u, _ in seg]
    total = 1
    for f in factors:
        total *= f
    if rng.random() < 0.5:  # big unit -> small unit: multiply
        value = Fraction(rng.randint(1, max_operand))
        ops = [("×", str(f)) for f in factors]
        src, dst = units[0], units[-1]
    else:  # small -> big: divide; the result is a whole or half amount so decimals stay short
        value = Fraction(rng.randint(1, max_operand) * total)
        if total % 2 == 0 and rng.random() < 0.5:
            value += total // 2
        ops = [("÷", str(f)) for f in reversed(factors)]
        units = units[::-1]
        src, dst = units[0], units[-1]
    return f"Convert {fmt_decimal(value)} {src} to {dst}.", {"start": fmt_decimal(value), "ops": ops, "units": units}


_GENERATORS = {"arithmetic": _gen_arithmetic, "fractions": _gen_fractions, "word": _gen_word, "units": _gen_units}


# ------------------------------------------------------------------------------------- solutions

def _step_text(category: str, program: dict[str, Any], i: int, a: Fraction, op: str, b: Fraction,
               result: Fraction) -> str:
    if category == "units":
        u = program["units"]
        return f"{fmt_decimal(a)} {u[i]} = {fmt_decimal(a)} {op} {fmt_number(b)} {u[i + 1]} = {fmt_decimal(result)} {u[i + 1]}"
    if category == "fractions":
        # Show the working: a common denominator for + and -, the raw product for ×; then the
        # reduced result. A slipped step shows the working and then the wrong result.
        if op in "+-":
            den = math.lcm(a.denominator, b.denominator)
            na, nb = a.numerator * den // a.denominator, b.numerator * den // b.denominator
            work = [f"{na}/{den} {op} {nb}/{den}", f"{na + nb if op == '+' else na - nb}/{den}"]
        else:
            work = [f"{a.numerator * b.numerator}/{a.denominator * b.denominator}"]
        if result != _apply(a, op, b):
            work = work[:1]
        parts = [f"{fmt_number(a)} {op} {fmt_number(b)}", *work]
        if parts[-1] != fmt_number(result):
            parts.append(fmt_number(result))
        return " = ".join(parts)
    text = f"{fmt_number(a)} {op} {fmt_number(b)} = {fmt_number(result)}"
    notes = program.get("notes")
    return f"{notes[i][0].upper()}{notes[i][1:]}: {text}" if notes else text


def solve(category: str, program: dict[str, Any], slip: tuple[int, Fraction | int] | None = None
          ) -> tuple[list[str], str]:
    """Render ``program`` into ``(steps, answer)``.

    ``slip=(k, delta)`` makes step ``k`` (0-based) report ``correct + delta`` and carries the wrong
    value through the later steps, so every step from ``k`` on is wrong and the answer is wrong.
    """
    if category not in _GENERATORS:
        raise ValueError(f"unknown category {category!r}; expected one of {', '.join(CATEGORIES)}")
    cur = Fraction(program["start"])
    steps = []
    for i, (op, b_text) in enumerate(program["ops"]):
        b = Fraction(b_text)
        result = _apply(cur, op, b)
        if slip is not None and slip[0] == i:
            result += Fraction(slip[1])
        steps.append(_step_text(category, program, i, cur, op, b, result))
        cur = result
    if category == "units":
        return steps, f"{fmt_decimal(cur)} {program['units'][-1]}"
    return steps, fmt_number(cur)


def wrong_solution(problem: dict[str, Any], rng: random.Random) -> tuple[list[str], str, int]:
    """A plausible wrong solution: ``(steps, answer, first_wrong_step)`` (a slip at a random step)."""
    program = problem["program"]
    k = rng.randrange(len(program["ops"]))
    while True:
        if problem["category"] == "fractions":
            delta = Fraction(rng.choice([-1, 1]), rng.randint(2, 6))
        else:
            delta = rng.choice([-3, -2, -1, 1, 2, 3, 10])
        steps, answer = solve(problem["category"], program, slip=(k, delta))
        value, _ = parse_answer(answer) or (None, None)
        if answer != problem["answer"] and value is not None and value >= 0:
            return steps, answer, k


def format_solution(steps: Sequence[str], answer: str) -> str:
    """The reference completion text: one step per line, then ``The answer is X.``."""
    return "\n".join([*steps, f"The answer is {answer}."])


# ---------------------------------------------------------------------------------------- streams

def problem_id(category: str, question: str) -> str:
    """Content id: the same question always gets the same id (and split), whatever the seed."""
    blob = json.dumps({"category": category, "question": question}, ensure_ascii=False)
    return "math-" + hashlib.sha256(blob.encode("utf-8")).hexdigest()[:12]


def _check_difficulty(categories: Sequence[str], steps: int, max_operand: int) -> None:
    unknown = sorted(set(categories) - set(CATEGORIES))
    if unknown or not categories:
        raise ValueError(f"categories: {unknown or 'none given'}; expected some of {', '.join(CATEGORIES)}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if max_operand < 2:
        raise ValueError(f"max_operand must be >= 2, got {max_operand}")


def iter_problems(seed: int = 0, categories: Sequence[str] = CATEGORIES, steps: int = 2,
                  max_operand: int = 20) -> Iterator[dict[str, Any]]:
    """Endless stream of distinct problems, deterministic in its arguments (categories in turn)."""
    categories = list(categories)
    _check_difficulty(categories, steps, max_operand)
    rng = random.Random(f"mathgen:{seed}:{steps}:{max_operand}")
    seen: set[str] = set()
    misses = 0
    i = 0
    while True:
        category = categories[i % len(categories)]
        question, program = _GENERATORS[category](rng, steps, max_operand)
        if question in seen:
            misses += 1
            if misses > 10_000:
                raise ValueError(f"cannot produce more than {len(seen)} distinct problems at "
                                 f"steps={steps}, max_operand={max_operand}")
            continue
        misses, i = 0, i + 1
        seen.add(question)
        program = {"start": program["start"], "ops": [list(o) for o in program["ops"]],
                   "notes": program.get("notes"), "units": program.get("units")}
        step_texts, answer = solve(category, program)
        yield {"id": problem_id(category, question), "category": category, "question": question,
               "steps": step_texts, "answer": answer, "program": program}


def generate_problems(n: int, seed: int = 0, categories: Sequence[str] = CATEGORIES, steps: int = 2,
                      max_operand: int = 20) -> list[dict[str, Any]]:
    """The first ``n`` problems of :func:`iter_problems` (no split)."""
    stream = iter_problems(seed, categories, steps, max_operand)
    return [next(stream) for _ in range(n)]


def make_splits(n_train: int, n_heldout: int, seed: int = 0, heldout_fraction: float = 0.25,
                categories: Sequence[str] = CATEGORIES, steps: int = 2, max_operand: int = 20
                ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(train, heldout)``: the stream routed by the hash of each problem id until both are full."""
    if not 0.0 < heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")
    return route_split(iter_problems(seed, categories, steps, max_operand), n_train, n_heldout, heldout_fraction)


# -------------------------------------------------------------------------------- answer checking

_NUM = r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
_VALUE_RE = re.compile(
    rf"(?<![\w.\-])(?P<num>{_NUM}(?:\s*/\s*{_NUM})?)(?:[ \t]*(?P<unit>[A-Za-z]+)\b)?"
)
_BOXED_RE = re.compile(r"\\boxed\s*\{((?:[^{}]|\{[^{}]*\})*)\}")
_FRAC_RE = re.compile(r"\\[dt]?frac\s*\{\s*([^{}]+?)\s*\}\s*\{\s*([^{}]+?)\s*\}")
_ANSWER_RE = re.compile(r"(?:answer\s*(?:is|:|=)|####)\s*:?\s*(?P<rest>[^\n]*)", re.IGNORECASE)


def _values(text: str) -> list[str]:
    text = _FRAC_RE.sub(r"\1/\2", text).replace("$", "")
    out = []
    for m in _VALUE_RE.finditer(text):
        num = re.sub(r"\s+", "", m.group("num"))
        unit = m.group("unit")
        canon = UNIT_ALIASES.get(unit.lower()) if unit else None
        out.append(f"{num} {canon}" if canon else num)
    return out


def extract_final_answer(text: str) -> str | None:
    """The final answer of a free-text solution (rules in the module docstring), or None."""
    boxed = _BOXED_RE.findall(text)
    if boxed:
        vals = _values(boxed[-1])
        if vals:
            return vals[0]
    for m in reversed(list(_ANSWER_RE.finditer(text))):
        vals = _values(m.group("rest"))
        if vals:
            return vals[0]
    vals = _values(text)
    return vals[-1] if vals else None


def parse_answer(answer: str) -> tuple[Fraction, str | None] | None:
    """``"4.5 km"`` -> ``(Fraction(9, 2), "km")``; ``"5/8"`` -> ``(Fraction(5, 8), None)``; else None."""
    vals = _values(answer)
    if not vals:
        return None
    num, _, unit = vals[0].partition(" ")
    num = num.replace(",", "")
    try:
        if "/" in num:
            a, b = num.split("/")
            value = Fraction(a) / Fraction(b)
        else:
            value = Fraction(num)
    except (ValueError, ZeroDivisionError):
        return None
    return value, (unit or None)


def _unit_scale(unit: str) -> tuple[str, Fraction] | None:
    """``(dimension, size in the chain's smallest unit)`` of a canonical unit."""
    for dim, chain in UNIT_CHAINS.items():
        names = [u for u, _ in chain]
        if unit in names:
            scale = Fraction(1)
            for _, f in chain[names.index(unit):]:
                scale *= f
            return dim, scale
    return None


def check_answer(text: str, answer: str) -> bool:
    """True when the final answer of ``text`` equals the canonical ``answer`` (rules in the docstring)."""
    got_text = extract_final_answer(text)
    got, ref = (parse_answer(got_text) if got_text else None), parse_answer(answer)
    if got is None or ref is None:
        return False
    (gv, gu), (rv, ru) = got, ref
    if gu is None or ru is None or gu == ru:
        return gv == rv
    gs, rs = _unit_scale(gu), _unit_scale(ru)
    return gs is not None and rs is not None and gs[0] == rs[0] and gv * gs[1] == rv * rs[1]


# ---------------------------------------------------------------------------------------- rows

def prompt_of(problem: dict[str, Any], conversational: bool = True) -> str | list[dict[str, str]]:
    """The prompt for a problem: the question plus :data:`INSTRUCTION` (a user message by default)."""
    text = f"{problem['question']} {INSTRUCTION}"
    return [{"role": "user", "content": text}] if conversational else text


def _completion(text: str, conversational: bool) -> str | list[dict[str, str]]:
    return [{"role": "assistant", "content": text}] if conversational else text


def sft_rows(problems: Sequence[dict[str, Any]], conversational: bool = True) -> list[dict[str, Any]]:
    """TRL prompt-completion rows with the reference solution (``id``/``answer`` ride along as metadata)."""
    return [{"prompt": prompt_of(p, conversational),
             "completion": _completion(format_solution(p["steps"], p["answer"]), conversational),
             "id": p["id"], "answer": p["answer"]} for p in problems]


def stepwise_rows(problems: Sequence[dict[str, Any]], seed: int = 0, wrong_fraction: float = 0.5,
                  ) -> list[dict[str, Any]]:
    """TRL stepwise-supervision rows ``{"prompt", "completions": [steps], "labels": [bool]}``.

    A ``wrong_fraction`` of problems (chosen by ``seed``) get a slipped solution
    (:func:`wrong_solution`): labels are True before the slip and False from it on. The final step
    is ``The answer is X.`` (the line :func:`format_solution` ends with, so a generated solution split
    at newlines has the same steps), labelled like the step before it. Prompts are plain strings
    (TRL's stepwise convention).
    """
    rng = random.Random(f"stepwise:{seed}")
    rows = []
    for p in problems:
        if rng.random() < wrong_fraction:
            steps, answer, k = wrong_solution(p, rng)
            labels = [i < k for i in range(len(steps))]
        else:
            steps, answer, labels = list(p["steps"]), p["answer"], [True] * len(p["steps"])
        steps, labels = [*steps, f"The answer is {answer}."], [*labels, labels[-1]]
        rows.append({"prompt": prompt_of(p, conversational=False), "completions": steps, "labels": labels,
                     "id": p["id"], "answer": p["answer"]})
    return rows


def write_jsonl(path: str | Path, rows: Sequence[dict[str, Any]]) -> int:
    """Write rows atomically (the shared writer of :mod:`alignkit.atomic`)."""
    from alignkit.atomic import write_jsonl_atomic

    return write_jsonl_atomic(path, rows)


def write_dataset(out_dir: str | Path, n_train: int, n_heldout: int, seed: int = 0,
                  categories: Sequence[str] = CATEGORIES, steps: int = 2, max_operand: int = 20,
                  ) -> dict[str, int]:
    """Write ``{train,heldout}_problems.jsonl``, ``train_sft.jsonl`` and ``train_stepwise.jsonl``."""
    out = Path(out_dir)
    train, heldout = make_splits(n_train, n_heldout, seed, categories=categories, steps=steps,
                                 max_operand=max_operand)
    return {
        "train_problems": write_jsonl(out / "train_problems.jsonl", train),
        "heldout_problems": write_jsonl(out / "heldout_problems.jsonl", heldout),
        "train_sft": write_jsonl(out / "train_sft.jsonl", sft_rows(train)),
        "train_stepwise": write_jsonl(out / "train_stepwise.jsonl", stepwise_rows(train, seed)),
    }


class MathDataConfig(StrictModel):
    """``alignkit data math``: write generated math problems, SFT rows and stepwise PRM rows."""

    cli_aliases: ClassVar[dict[str, str]] = {"--out": "output_dir"}

    output_dir: str
    """Output directory: {train,heldout}_problems.jsonl, train_sft.jsonl, train_stepwise.jsonl."""
    n_train: int = Field(default=200, ge=0)
    """Training problems."""
    n_heldout: int = Field(default=50, ge=0)
    """Held-out problems (split by a hash of the problem id)."""
    seed: int = 0
    """Seed of the generator (and of which stepwise rows get a slipped solution)."""
    level: Literal[1, 2, 3, 4] | None = None
    """Difficulty preset: sets steps and max_operand (LEVELS: 1 -> 1, 10; 2 -> 2, 20; 3 -> 3, 50; 4 -> 4, 100)."""
    steps: int = Field(default=2, ge=1)
    """Operations per problem."""
    max_operand: int = Field(default=20, ge=1)
    """Largest operand."""
    categories: list[Literal["arithmetic", "fractions", "word", "units"]] = Field(
        default_factory=lambda: list(CATEGORIES), min_length=1)
    """Problem categories to generate."""

    @model_validator(mode="after")
    def _one_difficulty(self) -> MathDataConfig:
        if self.level is None:
            return self
        steps, max_operand = LEVELS[self.level]
        given = {k: getattr(self, k) for k in ("steps", "max_operand") if k in self.model_fields_set}
        if any(given[k] != v for k, v in (("steps", steps), ("max_operand", max_operand)) if k in given):
            raise ValueError(f"level={self.level} means steps={steps}, max_operand={max_operand} (got {given}); "
                             "give level or steps/max_operand")
        self.steps, self.max_operand = steps, max_operand
        return self


def run_math_data(cfg: MathDataConfig) -> int:
    """Write the files ``cfg`` describes and print their row counts (JSON)."""
    counts = write_dataset(cfg.output_dir, cfg.n_train, cfg.n_heldout, cfg.seed, categories=cfg.categories,
                           steps=cfg.steps, max_operand=cfg.max_operand)
    print(json.dumps(counts))
    return 0
