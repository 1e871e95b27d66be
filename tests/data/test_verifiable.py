"""The demo's IFEval-format data: the generator (determinism, coverage, conflicts, arguments the checkers
accept), the split, the verifier on hand-made rows, and the row reader."""

from __future__ import annotations

import itertools
import json
import random
from collections import Counter

import pytest

from alignkit.data import ifeval_gen as G
from alignkit.data.verifiable import follows, is_heldout, load_prompt_rows, make_splits, validate_row, verify
from alignkit.errors import DataError
from alignkit.evals.ifeval.checkers import INSTRUCTIONS


def _rows(n: int, seed: int = 0) -> list[dict]:
    return list(itertools.islice(G.iter_rows(seed), n))


def test_generator_is_deterministic_and_json_serialisable():
    a, b = _rows(50, seed=3), _rows(50, seed=3)
    assert a == b and json.loads(json.dumps(a)) == a
    assert _rows(50, seed=4) != a
    assert all(set(r) == {"key", "prompt", "instruction_id_list", "kwargs"} for r in a)
    assert all(r["key"] == G.row_key(r) and isinstance(r["key"], int) for r in a)  # content keys
    assert len({r["prompt"] for r in _rows(2000)}) == 2000  # distinct prompts


def test_every_instruction_type_appears_single_and_combined():
    rows = _rows(1500)
    counts = Counter(i for r in rows for i in r["instruction_id_list"])
    assert set(counts) == set(INSTRUCTIONS) and len(INSTRUCTIONS) == 25
    assert min(counts.values()) >= 20
    sizes = Counter(len(r["instruction_id_list"]) for r in rows)
    assert set(sizes) == {1, 2, 3} and sizes[1] > sizes[2] > sizes[3]
    singles = {r["instruction_id_list"][0] for r in rows if len(r["instruction_id_list"]) == 1}
    assert singles == set(INSTRUCTIONS)


def test_combined_instructions_never_conflict():
    for r in _rows(1500):
        ids = r["instruction_id_list"]
        for a, b in itertools.combinations(ids, 2):
            assert b not in G.CONFLICTS[a] and a not in G.CONFLICTS[b], (a, b, r["prompt"])
    assert G.CONFLICTS["detectable_format:constrained_response"] == frozenset(INSTRUCTIONS)
    assert "keywords:existence" not in G.CONFLICTS["detectable_format:json_format"]
    assert "detectable_format:title" in G.CONFLICTS["startend:quotation"]  # made symmetric, as the reference does
    assert "startend:quotation" in G.CONFLICTS["detectable_format:title"]


def test_conflicts_equal_the_references(tmp_path):
    """The conflict table is the reference's INSTRUCTION_CONFLICTS after its conflict_make (lm-eval oracle)."""
    from tests.evals.ifeval_oracle import lm_eval_ifeval

    with lm_eval_ifeval(tmp_path):
        from lm_eval.tasks.ifeval import instructions_registry as ref

        table = ref.conflict_make({k: set(v) for k, v in ref.INSTRUCTION_CONFLICTS.items()})
    assert {k: frozenset(v) for k, v in table.items()} == G.CONFLICTS


def test_generated_arguments_are_accepted_and_scorable_by_the_ifeval_checkers():
    """Every generated row parses with alignkit.evals.ifeval (no missing, extra or ill-typed argument, no
    random draw), and each instruction can be both followed and not followed by some text."""
    from alignkit.evals.ifeval.scoring import parse_row, row_checks

    rows = _rows(600, seed=1)
    for r in rows:
        row = parse_row(r, "generated")
        assert len(row_checks(row)) == len(r["instruction_id_list"])
    repeat = [r for r in rows if "combination:repeat_prompt" in r["instruction_id_list"]]
    for r in repeat:
        kw = r["kwargs"][r["instruction_id_list"].index("combination:repeat_prompt")]
        assert r["prompt"] == f"{G.REPEAT_SENTENCE}\n\n{kw['prompt_to_repeat']}"
        assert follows(kw["prompt_to_repeat"] + " Sure.", r)[r["instruction_id_list"].index("combination:repeat_prompt")]


def test_splits_are_disjoint_deterministic_and_hash_routed():
    train, held = make_splits(300, 500, seed=5, heldout_fraction=0.25)
    assert (len(train), len(held)) == (300, 500)
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in held}
    assert not {r["key"] for r in train} & {r["key"] for r in held}
    assert all(is_heldout(r["key"], 0.25) for r in held)
    assert not any(is_heldout(r["key"], 0.25) for r in train)
    assert make_splits(300, 500, seed=5, heldout_fraction=0.25) == (train, held)
    train2, held2 = make_splits(350, 560, seed=5, heldout_fraction=0.25)
    assert train2[:300] == train and held2[:500] == held  # a larger request extends a smaller one
    assert set(INSTRUCTIONS) == {i for r in held for i in r["instruction_id_list"]}
    with pytest.raises(ValueError, match="heldout_fraction"):
        make_splits(1, 1, heldout_fraction=1.0)


ROW = {"key": 7, "prompt": "Describe cats. Do not use any commas. Include the keyword \"purr\".",
       "instruction_id_list": ["punctuation:no_comma", "keywords:existence"],
       "kwargs": [{}, {"keywords": ["purr"]}]}


@pytest.mark.parametrize("response,strict,loose", [
    ("Cats purr when happy.", [True, True], [True, True]),
    ("Cats, when happy, purr.", [False, True], [False, True]),
    ("Cats sleep a lot.", [True, False], [True, False]),
    ("Sure, here it is:\nCats purr when happy.", [False, True], [True, True]),  # loose drops the first line
    ("", [False, False], [False, False]),
])
def test_verifier_on_hand_made_rows(response, strict, loose):
    assert follows(response, ROW) == strict
    assert follows(response, ROW, loose=True) == loose
    assert verify(response, ROW) == all(strict)


def test_old_format_rows_and_bad_arguments_are_refused(tmp_path):
    old = {"id": "vif-1", "prompt": "Describe the sea.", "constraint": {"type": "no_commas"}}
    with pytest.raises(DataError, match="pre-IFEval verifiable row .*regenerate"):
        verify("Blue.", old)
    bad = dict(ROW, kwargs=[{}, {"keyword": "purr"}])
    with pytest.raises(DataError, match="unexpected argument"):
        validate_row(bad, "x.jsonl:1")
    good = _rows(2)
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(good[0]) + "\n\n" + json.dumps(good[1]) + "\n")
    assert load_prompt_rows(str(path)) == good
    path.write_text(json.dumps(good[0]) + "\n\n" + json.dumps(dict(good[1], kwargs=[])) + "\n")
    with pytest.raises(DataError, match=r"p\.jsonl:3: field 'kwargs'"):
        load_prompt_rows(str(path))
    path.write_text('{"key": 1, "prompt": "hi"\n')
    with pytest.raises(DataError, match=r"p\.jsonl:1: invalid JSON"):
        load_prompt_rows(str(path))


def test_instruction_choice_uses_its_rng_only():
    """The generator draws from its own Random: the global random state neither feeds nor is changed by it."""
    random.seed(1)
    state = random.getstate()
    a = _rows(5)
    assert random.getstate() == state
    random.seed(2)
    assert _rows(5) == a
