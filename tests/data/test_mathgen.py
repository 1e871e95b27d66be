"""Math-problem generator: determinism, split stability, self-consistent answers, answer extraction."""

from __future__ import annotations

import json
import random
from fractions import Fraction

import pytest

from alignkit.data import mathgen
from alignkit.data.mathgen import (
    CATEGORIES,
    LEVELS,
    check_answer,
    extract_final_answer,
    format_solution,
    generate_problems,
    make_splits,
    parse_answer,
    sft_rows,
    solve,
    stepwise_rows,
    wrong_solution,
)


def test_deterministic_and_distinct():
    a = generate_problems(40, seed=3)
    b = generate_problems(40, seed=3)
    assert a == b
    assert generate_problems(40, seed=4) != a
    assert len({p["question"] for p in a}) == 40
    assert {p["category"] for p in a} == set(CATEGORIES)
    assert all(p["id"] == mathgen.problem_id(p["category"], p["question"]) for p in a)


def test_split_is_stable_when_counts_change():
    train_s, held_s = make_splits(20, 8, seed=1)
    train_l, held_l = make_splits(60, 25, seed=1)
    assert train_l[:20] == train_s and held_l[:8] == held_s  # larger extends smaller
    assert not {p["id"] for p in train_l} & {p["id"] for p in held_l}
    # A problem's split is a function of its id only, whatever the held-out count asked for.
    assert all(mathgen.is_heldout(p["id"], 0.25) for p in held_l)
    assert not any(mathgen.is_heldout(p["id"], 0.25) for p in train_l)


@pytest.mark.parametrize("level", sorted(LEVELS))
def test_every_answer_checks_against_its_own_steps(level):
    steps, max_operand = LEVELS[level]
    for p in generate_problems(60, seed=level, steps=steps, max_operand=max_operand):
        assert 1 <= len(p["steps"]) <= steps
        assert check_answer(p["steps"][-1], p["answer"]), p
        assert check_answer(format_solution(p["steps"], p["answer"]), p["answer"]), p
        assert solve(p["category"], p["program"]) == (p["steps"], p["answer"])
        value, unit = parse_answer(p["answer"])
        assert value >= 0 and (unit is not None) == (p["category"] == "units")
        if p["category"] != "units":  # canonical: an integer or a reduced fraction
            assert p["answer"] == (str(value.numerator) if value.denominator == 1
                                   else f"{value.numerator}/{value.denominator}")
        for op, b in p["program"]["ops"]:
            assert op in "+-×÷" and Fraction(b) <= max(max_operand, 1000)


def test_difficulty_knobs():
    easy = generate_problems(30, seed=0, categories=["arithmetic"], steps=1, max_operand=10)
    assert all(len(p["steps"]) == 1 for p in easy)
    assert all(Fraction(x) <= 10 for p in easy for x in [p["program"]["start"]] + [b for _, b in p["program"]["ops"]])
    hard = generate_problems(30, seed=0, categories=["arithmetic", "word"], steps=4, max_operand=100)
    assert all(len(p["steps"]) == 4 for p in hard)
    with pytest.raises(ValueError, match="categories"):
        generate_problems(1, categories=["geometry"])


def test_hand_computed_examples():
    program = {"start": "7", "ops": [["+", "5"], ["×", "3"]], "notes": None, "units": None}
    assert solve("arithmetic", program) == (["7 + 5 = 12", "12 × 3 = 36"], "36")
    assert mathgen._expression("7", [("+", "5"), ("×", "3"), ("-", "4")]) == "(7 + 5) × 3 - 4"
    frac = {"start": "1/2", "ops": [["+", "1/3"], ["×", "3/4"]], "notes": None, "units": None}
    assert solve("fractions", frac) == (["1/2 + 1/3 = 3/6 + 2/6 = 5/6", "5/6 × 3/4 = 15/24 = 5/8"], "5/8")
    units = {"start": "4500", "ops": [["÷", "1000"]], "notes": None, "units": ["m", "km"]}
    assert solve("units", units) == (["4500 m = 4500 ÷ 1000 km = 4.5 km"], "4.5 km")
    # a slip at step 0 is carried through the later steps
    assert solve("arithmetic", program, slip=(0, 1)) == (["7 + 5 = 13", "13 × 3 = 39"], "39")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("7 + 5 = 12\n12 × 3 = 36\nThe answer is 36.", "36"),
        ("The answer is 36. I checked it twice, in 2 ways.", "36"),
        ("Answer: 5/8", "5/8"),
        ("so we get $\\boxed{\\frac{5}{8}}$ and 3 more words", "5/8"),
        ("\\boxed{42} is my final answer is 7", "42"),
        ("#### 1,250", "1,250"),
        ("It comes to 4.5 km in total", "4.5 km"),
        ("That is 300 centimetres.", "300 cm"),
        ("The result is -3", "-3"),
        ("There are 12 apples left.", "12"),
        ("I am not sure how to do this.", None),
        ("", None),
    ],
)
def test_extract_final_answer(text, expected):
    assert extract_final_answer(text) == expected


@pytest.mark.parametrize(
    "text, answer, ok",
    [
        ("The answer is 0.5", "1/2", True),
        ("The answer is 2/4.", "1/2", True),
        ("The answer is 1,250.", "1250", True),
        ("The answer is 1250.0", "1250", True),
        ("The answer is 36", "37", False),
        ("The answer is 4.5 km.", "4.5 km", True),
        ("The answer is 4500 m.", "4.5 km", True),  # convertible units are equal
        ("The answer is 4.5", "4.5 km", True),  # no unit given: the number decides
        ("The answer is 4.5 kg", "4.5 km", False),  # a different dimension is wrong
        ("The answer is 4.5 m", "4.5 km", False),
        ("The answer is 2 hours", "120 min", True),
        ("I give up.", "3", False),
        ("The answer is 1/0", "3", False),
    ],
)
def test_check_answer(text, answer, ok):
    assert check_answer(text, answer) is ok


def test_wrong_solutions_and_stepwise_rows():
    problems = generate_problems(40, seed=2)
    rng = random.Random(0)
    for p in problems:
        steps, answer, k = wrong_solution(p, rng)
        assert answer != p["answer"] and not check_answer(format_solution(steps, answer), p["answer"])
        assert steps[:k] == p["steps"][:k] and steps[k] != p["steps"][k]
    rows = stepwise_rows(problems, seed=0, wrong_fraction=0.5)
    assert rows == stepwise_rows(problems, seed=0, wrong_fraction=0.5)
    n_wrong = 0
    for row, p in zip(rows, problems, strict=True):
        assert len(row["completions"]) == len(row["labels"]) == len(p["steps"]) + 1
        assert row["completions"][-1].startswith("The answer is ")
        assert all(s.strip() for s in row["completions"]) and isinstance(row["prompt"], str)
        # labels are monotone: correct steps, then wrong from the slip on
        first_false = row["labels"].index(False) if False in row["labels"] else len(row["labels"])
        assert row["labels"] == [True] * first_false + [False] * (len(row["labels"]) - first_false)
        assert check_answer(row["completions"][-1], p["answer"]) is all(row["labels"])
        n_wrong += not all(row["labels"])
    assert 10 <= n_wrong <= 30


def test_sft_rows_and_writer(tmp_path):
    from alignkit.data.rows import read_rows

    problems = generate_problems(5, seed=0)
    rows = sft_rows(problems)
    assert rows[0]["prompt"][0]["role"] == "user" and problems[0]["question"] in rows[0]["prompt"][0]["content"]
    assert check_answer(rows[0]["completion"][0]["content"], problems[0]["answer"])
    counts = mathgen.write_dataset(tmp_path, n_train=12, n_heldout=4, seed=0, steps=1, max_operand=10)
    assert counts == {"train_problems": 12, "heldout_problems": 4, "train_sft": 12, "train_stepwise": 12}
    assert len(read_rows(tmp_path / "train_sft.jsonl", "sft")) == 12
    first = json.loads((tmp_path / "train_stepwise.jsonl").read_text().splitlines()[0])
    assert set(first) >= {"prompt", "completions", "labels"}


def test_data_math_command_writes_the_dataset_of_its_level(tmp_path, capsys):
    """`alignkit data math` (it replaced `python -m alignkit.data.mathgen`): level sets the difficulty and
    is refused together with a different steps / max_operand."""
    from alignkit.cli import main

    out = tmp_path / "math"
    assert main(["data", "math", "--out", str(out), "--n-train", "6", "--n-heldout", "2", "--level", "3",
                 "--categories", "arithmetic,word"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {
        "train_problems": 6, "heldout_problems": 2, "train_sft": 6, "train_stepwise": 6}
    rows = [json.loads(x) for x in (out / "train_problems.jsonl").read_text().splitlines()]
    assert rows == make_splits(6, 2, 0, categories=["arithmetic", "word"], steps=3, max_operand=50)[0]
    assert main(["data", "math", "--config", str(out / "config.yaml")]) == 0  # the saved config re-runs it
    assert main(["data", "math", "--out", str(tmp_path / "x"), "--level", "1", "--steps", "3"]) == 2
    assert "level=1 means steps=1" in capsys.readouterr().err and not (tmp_path / "x").exists()
