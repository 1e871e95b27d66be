"""The offline mini suite: deterministic, valid LongBench records, correct answers, sized by length."""

from __future__ import annotations

import json

import pytest

from alignkit.evals.longbench import validate_record
from alignkit.evals.mini_suite import NOMINAL_LENGTHS, build_suite, paragraph_pool, parse_length, write_suite
from alignkit.evals.registry import load_suite

LENGTHS = ["1k", "2k"]


@pytest.fixture(scope="module")
def suite():
    return build_suite(lengths=LENGTHS, samples_per_length=2, seed=0)


def test_same_seed_same_files_other_seed_other_files(tmp_path, suite):
    a = write_suite(suite, tmp_path / "a")
    b = write_suite(build_suite(lengths=LENGTHS, samples_per_length=2, seed=0), tmp_path / "b")
    assert [p.name for p in a] == [p.name for p in b]
    for pa, pb in zip(a, b, strict=True):
        assert pa.read_bytes() == pb.read_bytes()
    c = build_suite(lengths=LENGTHS, samples_per_length=2, seed=1)
    assert all(c[n] != suite[n] for n in suite)


def test_records_are_valid_longbench_records(suite):
    assert set(suite) == set(load_suite("mini"))
    for name, records in suite.items():
        assert len(records) == len(LENGTHS) * 2
        assert [r["length_bucket"] for r in records] == ["1k", "1k", "2k", "2k"]
        assert len({r["_id"] for r in records}) == len(records)
        for r in records:
            validate_record(r, name)
            assert r["dataset"] == name
            assert r["length"] == len(r["input"].split()) + len(r["context"].split()) + sum(
                len(a.split()) for a in r["answers"]
            )


def test_passage_retrieval_answer_is_the_only_paragraph_with_the_excerpt(suite):
    for r in suite["mini_passage_retrieval"]:
        paras = r["context"].split("\n\n")
        hits = [p.split(":", 1)[0] for p in paras if r["input"] in p]
        assert hits == r["answers"]


def test_passage_count_answer_counts_unique_paragraphs(suite):
    for r in suite["mini_passage_count"]:
        bodies = [p.split(": ", 1)[1] for p in r["context"].split("\n\n")]
        assert int(r["answers"][0]) == len(set(bodies)) < len(bodies)  # there are duplicates


def test_single_fact_is_stated_once_and_answerable(suite):
    for r in suite["mini_single_fact_qa"]:
        facts = [p for p in r["context"].split("\n\n") if r["answers"][0] in p]
        assert len(facts) == 1 and facts[0].endswith(".")


def test_kv_retrieval_answer_is_the_value_of_the_key(suite):
    for r in suite["mini_kv_retrieval"]:
        assert json.loads(r["context"])[r["input"]] == r["answers"][0]


def test_prompt_sizes_track_the_nominal_lengths(embedded_tokenizer, suite):
    tokenizer = embedded_tokenizer  # the nominal lengths are counted in the embedded model's tokens
    tasks = load_suite("mini")
    for name, records in suite.items():
        for r in records:
            n = len(tokenizer(tasks[name].render(r))["input_ids"])
            target = NOMINAL_LENGTHS[r["length_bucket"]]
            assert 0.75 * target <= n <= 1.1 * target, (name, r["length_bucket"], n)


def test_parse_length_and_pool():
    assert parse_length("8k") == ("8k", 7200)  # fits an 8k model's 7,500-token input budget
    assert parse_length("500") == ("500", 500)
    with pytest.raises(ValueError, match="unknown length"):
        parse_length("3q")
    pool = paragraph_pool()
    assert len(pool) > 300 and len({t for _, t in pool}) == len(pool)
    with pytest.raises(KeyError, match="unknown mini task"):
        build_suite(["nope"])
