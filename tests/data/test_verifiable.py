"""Verifiable-instruction generator and verifiers: hand-written pass/fail cases, determinism, splits."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from alignkit.data.verifiable import (
    CONSTRAINT_TYPES,
    TOPICS,
    echoes,
    generate_prompts,
    is_heldout,
    iter_prompts,
    load_prompt_rows,
    make_splits,
    verify,
    words,
)

# (constraint, response, expected) — each type has passing and failing cases, including the edge cases
# the tokenisation rules are there for: punctuation, capitalisation, markdown, trailing whitespace.
CASES = [
    # word tokenisation: punctuation-only tokens and markdown are not words; contractions are one word
    ({"type": "exact_words", "n": 3}, "Blue, vast water.", True),
    ({"type": "exact_words", "n": 3}, "  Blue — vast water!  \n", True),
    ({"type": "exact_words", "n": 3}, "**Blue** vast *water*", True),
    ({"type": "exact_words", "n": 3}, "It's well-known water.", True),
    ({"type": "exact_words", "n": 3}, "Pi is 3.14", True),
    ({"type": "exact_words", "n": 3}, "Blue vast deep water.", False),
    ({"type": "exact_words", "n": 3}, "Blue water.", False),
    ({"type": "exact_words", "n": 3}, "It is not", True),
    ({"type": "exact_words", "n": 3}, "It isn't", False),
    ({"type": "max_words", "n": 4}, "The sea is big.", True),
    ({"type": "max_words", "n": 4}, "Big.", True),
    ({"type": "max_words", "n": 4}, "The sea is very big.", False),
    ({"type": "max_words", "n": 4}, "...!!!", False),  # no words at all is not an answer
    ({"type": "lowercase"}, "the sea is big.\n", True),
    ({"type": "lowercase"}, "the sea is 100% big, isn't it?", True),
    ({"type": "lowercase"}, "The sea is big.", False),
    ({"type": "lowercase"}, "the sea is BIG", False),
    ({"type": "lowercase"}, "the sea near Paris", False),
    ({"type": "lowercase"}, "42 + 7", False),  # nothing cased to be lowercase
    ({"type": "start_with", "word": "Sure"}, "Sure, here it is.", True),
    ({"type": "start_with", "word": "Sure"}, "sure thing", True),
    ({"type": "start_with", "word": "Sure"}, '**"Sure!"** The sea.', True),
    ({"type": "start_with", "word": "Sure"}, "Surely not.", False),
    ({"type": "start_with", "word": "Sure"}, "I am sure.", False),
    ({"type": "end_with", "word": "peace"}, "We want peace.", True),
    ({"type": "end_with", "word": "peace"}, "We want PEACE!  \n", True),
    ({"type": "end_with", "word": "peace"}, 'We want "peace".', True),
    ({"type": "end_with", "word": "peace"}, "We want peace :)", True),
    ({"type": "end_with", "word": "peace"}, "We want peaceful days.", False),
    ({"type": "end_with", "word": "peace"}, "Peace is what we want.", False),
    ({"type": "no_commas"}, "The sea is big and blue.", True),
    ({"type": "no_commas"}, "The sea is big, and blue.", False),
    ({"type": "no_commas"}, "海很大，很蓝", False),  # fullwidth comma counts as a comma
    ({"type": "keyword_count", "keyword": "water", "min_count": 2}, "Water is wet. Drink water.", True),
    ({"type": "keyword_count", "keyword": "water", "min_count": 2}, "WATER and the water's edge", True),
    ({"type": "keyword_count", "keyword": "water", "min_count": 2}, "Water is wet. Waterfalls too.", False),
    ({"type": "keyword_count", "keyword": "water", "min_count": 2}, "Water and waters.", False),
    ({"type": "keyword_count", "keyword": "water", "min_count": 1}, "Just water", True),
    ({"type": "keyword_count", "keyword": "art", "min_count": 1}, "Start smart.", False),  # whole words only
    ({"type": "quoted"}, '"The sea is big."', True),
    ({"type": "quoted"}, '  "The sea is big."\n', True),
    ({"type": "quoted"}, "“The sea is big.”", True),
    ({"type": "quoted"}, 'The sea is "big".', False),
    ({"type": "quoted"}, '"The sea is big.', False),
    ({"type": "quoted"}, '""', False),
    ({"type": "quoted"}, '"', False),
    ({"type": "quoted"}, "'The sea is big.'", False),  # single quotes are not double quotes
    ({"type": "arithmetic", "expression": "17 + 25", "answer": 42}, "42", True),
    ({"type": "arithmetic", "expression": "17 + 25", "answer": 42}, " 42.\n", True),
    ({"type": "arithmetic", "expression": "3 - 5", "answer": -2}, "-2", True),
    ({"type": "arithmetic", "expression": "17 + 25", "answer": 42}, "43", False),
    ({"type": "arithmetic", "expression": "17 + 25", "answer": 42}, "17 + 25 = 42", False),
    ({"type": "arithmetic", "expression": "17 + 25", "answer": 42}, "The answer is 42.", False),
    ({"type": "arithmetic", "expression": "17 + 25", "answer": 42}, "42..", False),
    ({"type": "arithmetic", "expression": "17 + 25", "answer": 42}, "**42**", False),
]


@pytest.mark.parametrize("constraint,response,expected", CASES)
def test_verify_hand_written(constraint, response, expected):
    assert verify(response, constraint) is expected


def test_every_type_has_passing_and_failing_cases():
    seen = {(c["type"], exp) for c, _, exp in CASES}
    for ctype in CONSTRAINT_TYPES:
        assert (ctype, True) in seen and (ctype, False) in seen, ctype


@pytest.mark.parametrize("ctype", CONSTRAINT_TYPES)
def test_empty_response_fails_every_type(ctype):
    row = next(r for r in iter_prompts(seed=3, mix={ctype: 1.0}))
    assert verify("", row["constraint"]) is False
    assert verify("  \n\t", row["constraint"]) is False


def test_words_rule():
    assert words("**Sure**, here: don't well-known 3.5 1,000 U.S. peace! :) foo_bar") == [
        "Sure", "here", "don't", "well-known", "3.5", "1,000", "U", "S", "peace", "foo", "bar",
    ]
    assert words("— ... !!! ** #") == []
    assert words("café naïve 東京") == ["café", "naïve", "東京"]


ECHO_CASES = [
    # (constraint, response, expected): restating the instruction fails even when the letter of the
    # constraint is met; honest answers that share a word or two with it still pass.
    ({"type": "end_with", "word": "today", "instruction": 'The last word of your answer must be "today".'},
     'The last word of your answer must be "today".', False),
    ({"type": "end_with", "word": "today", "instruction": 'The last word of your answer must be "today".'},
     "A garden is where I would rather be today.", True),
    ({"type": "no_commas", "instruction": "Your answer must not contain a single comma."},
     "This answer must not contain a single comma.", False),
    ({"type": "no_commas", "instruction": "Your answer must not contain a single comma."},
     "Reading opens your mind to new worlds.", True),
    ({"type": "max_words", "n": 15, "instruction": "Keep your answer to 15 words or fewer."},
     "This answer only contains 15 words or less.", False),
    ({"type": "exact_words", "n": 7, "instruction": "Your answer must be exactly 7 words long."},
     "The answer must contain exactly 7 words.", False),
    ({"type": "exact_words", "n": 7, "instruction": "Your answer must be exactly 7 words long."},
     "Birds sing to find mates and friends.", True),
    ({"type": "start_with", "word": "Sure", "instruction": 'Start your answer with the word "Sure".'},
     "Sure, your answer is welcome.", True),  # two shared words in a row is not a restatement
]


@pytest.mark.parametrize("constraint,response,expected", ECHO_CASES)
def test_verify_rejects_restated_instructions(constraint, response, expected):
    assert verify(response, constraint) is expected
    bare = {k: v for k, v in constraint.items() if k != "instruction"}
    assert verify(response, bare) is True  # without the instruction text only the constraint counts


def test_echoes_is_case_insensitive_and_ignores_punctuation():
    assert echoes(words("THE LAST WORD!"), "The last word of your answer")
    assert not echoes(words("the last"), "The last word of your answer")
    assert not echoes(words("word the last"), "The last word of your answer")


def test_generated_instruction_is_the_prompt_minus_the_question():
    for row in generate_prompts(200, seed=4):
        inst = row["constraint"]["instruction"]
        assert inst and inst.rstrip(".?") in row["prompt"]
        assert not any(q in inst for q, _ in TOPICS)


def test_verify_rejects_malformed_constraints():
    with pytest.raises(ValueError, match="unknown constraint type 'shout'"):
        verify("x", {"type": "shout"})
    with pytest.raises(ValueError, match="constraint type 'max_words' needs field 'n'"):
        verify("x", {"type": "max_words"})
    with pytest.raises(ValueError, match="expected an object"):
        verify("x", "lowercase")


def test_generator_is_deterministic_and_json_serialisable():
    a = generate_prompts(200, seed=7)
    b = generate_prompts(200, seed=7)
    assert a == b
    assert json.loads(json.dumps(a)) == a
    assert generate_prompts(50, seed=8) != a[:50]
    assert generate_prompts(50, seed=7) == a[:50]  # a longer request extends a shorter one


def test_generator_variety():
    rows = generate_prompts(400, seed=0)
    prompts = [r["prompt"] for r in rows]
    assert len(set(prompts)) == len(prompts)
    assert len({r["id"] for r in rows}) == len(rows)
    types = Counter(r["constraint"]["type"] for r in rows)
    assert set(types) == set(CONSTRAINT_TYPES)
    assert min(types.values()) >= 15
    used_topics = {q for q, _ in TOPICS if any(p.startswith(q) or p.endswith(q) for p in prompts)}
    assert len(used_topics) >= 30
    answers = {r["constraint"]["answer"] for r in rows if r["constraint"]["type"] == "arithmetic"}
    assert len(answers) >= 10


def test_generated_constraints_are_consistent_with_prompts():
    for row in generate_prompts(300, seed=1):
        c, p = row["constraint"], row["prompt"]
        if c["type"] in ("exact_words", "max_words"):
            assert f" {c['n']} words" in p
        elif c["type"] in ("start_with", "end_with"):
            assert f'"{c["word"]}"' in p
        elif c["type"] == "keyword_count":
            assert f'"{c["keyword"]}"' in p
        elif c["type"] == "arithmetic":
            assert c["expression"] in p
            a, op, b = c["expression"].split()
            assert c["answer"] == {"+": int(a) + int(b), "-": int(a) - int(b), "×": int(a) * int(b)}[op]


def test_mix_restricts_types_and_rejects_unknown():
    rows = generate_prompts(30, seed=0, mix={"lowercase": 1.0, "quoted": 2.0})
    assert {r["constraint"]["type"] for r in rows} == {"lowercase", "quoted"}
    with pytest.raises(ValueError, match="unknown constraint type"):
        generate_prompts(1, mix={"haiku": 1.0})
    with pytest.raises(ValueError, match="positive weight"):
        generate_prompts(1, mix={"lowercase": 0.0})


def test_splits_are_disjoint_deterministic_and_hash_routed():
    train, held = make_splits(120, 40, seed=5, heldout_fraction=0.25)
    assert (len(train), len(held)) == (120, 40)
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in held}
    assert all(is_heldout(r["id"], 0.25) for r in held)
    assert not any(is_heldout(r["id"], 0.25) for r in train)
    assert make_splits(120, 40, seed=5, heldout_fraction=0.25) == (train, held)
    train2, held2 = make_splits(150, 60, seed=5, heldout_fraction=0.25)
    assert train2[:120] == train and held2[:40] == held
    with pytest.raises(ValueError, match="heldout_fraction"):
        make_splits(1, 1, heldout_fraction=1.0)


def test_load_prompt_rows_reports_file_and_line(tmp_path):
    good = generate_prompts(2, seed=0)
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(good[0]) + "\n\n" + json.dumps(good[1]) + "\n")
    assert load_prompt_rows(str(path)) == good
    bad = dict(good[1], constraint={"type": "max_words"})
    path.write_text(json.dumps(good[0]) + "\n\n" + json.dumps(bad) + "\n")
    with pytest.raises(ValueError) as exc:
        load_prompt_rows(str(path))
    assert str(exc.value) == f"{path}:3: field 'constraint': constraint type 'max_words' needs field 'n'"
    path.write_text('{"id": "x", "prompt": "hi"\n')
    with pytest.raises(ValueError, match=r"p\.jsonl:1: invalid JSON"):
        load_prompt_rows(str(path))
    path.write_text(json.dumps({"id": "x", "constraint": {"type": "lowercase"}}) + "\n")
    with pytest.raises(ValueError, match=r"p\.jsonl:1: field 'prompt': missing"):
        load_prompt_rows(str(path))
