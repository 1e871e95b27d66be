"""Signatures change when any component changes, and only then; dataset hashes ignore order."""

from __future__ import annotations

import copy
import random

import pytest

from alignkit.evals.registry import get_task
from alignkit.evals.runner import task_signature
from alignkit.evals.signature import (
    SETTING_COMPONENTS,
    SUBJECT_COMPONENTS,
    Signature,
    aggregate_signature,
    describe_difference,
    differing_components,
)
from alignkit.fingerprints import UnorderedSha256, canonical_dumps, dataset_hash
from alignkit.generate.engine import SamplingParams

RECORDS = [
    {"input": f"q{i}", "context": f"c{i}", "answers": [f"a{i}"], "length": 100 * i, "_id": str(i)}
    for i in range(6)
]
SUBJECT = {
    "model": {"name": "m", "sha256": "1" * 64, "dtype": "float32"},
    "tokenizer": {"sha256": "2" * 64},
    "chat_template": {"sha256": "3" * 64},
}


def _sig(task="hotpotqa", records=RECORDS, max_length=7500, params=None, subject=SUBJECT):
    t = get_task("longbench", task)
    params = params or SamplingParams(max_new_tokens=t.max_new_tokens, temperature=0.0, seed=42)
    return task_signature(t, records, max_length, params, subject)


def _leaves(obj, path=()):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, path + (k,))
    else:
        yield path


def _mutate(obj, path):
    node = obj
    for k in path[:-1]:
        node = node[k]
    v = node[path[-1]]
    node[path[-1]] = (not v) if isinstance(v, bool) else (v + 1 if isinstance(v, int) else f"{v}-changed")


def test_every_leaf_change_changes_the_full_hash_and_only_its_class():
    base = _sig()
    seen = set()
    for path in _leaves(base.components):
        comps = copy.deepcopy(base.components)
        _mutate(comps, path)
        sig = Signature(comps)
        assert sig.sha256 != base.sha256, path
        assert differing_components(base, sig, SETTING_COMPONENTS + SUBJECT_COMPONENTS) == [path[0]]
        if path[0] in SETTING_COMPONENTS:
            assert sig.setting_sha256 != base.setting_sha256, path
        else:  # model / tokenizer / chat template identify what is evaluated, not how
            assert sig.setting_sha256 == base.setting_sha256, path
        seen.add(path[0])
    assert seen == {
        "metric",
        "task",
        "chat_policy",
        "truncation",
        "decoding",
        "dataset",
        "protocol",
        *SUBJECT_COMPONENTS,
    }


def test_equal_settings_give_equal_signatures():
    a = _sig()
    shuffled = RECORDS[:]
    random.Random(1).shuffle(shuffled)
    reordered_keys = [dict(reversed(list(r.items()))) for r in shuffled]
    b = _sig(records=reordered_keys)
    assert a.sha256 == b.sha256 and a.short() == b.short()
    assert differing_components(a, b) == []


def test_each_protocol_input_moves_its_own_component():
    base = _sig()
    cases = {
        "truncation": _sig(max_length=3500),
        "decoding": _sig(params=SamplingParams(max_new_tokens=64, temperature=0.0, seed=42)),
        "dataset": _sig(records=RECORDS[:-1]),
    }
    for comp, other in cases.items():
        assert differing_components(base, other) == [comp]
    other_subject = copy.deepcopy(SUBJECT)
    other_subject["model"]["sha256"] = "9" * 64
    moved = _sig(subject=other_subject)
    assert differing_components(base, moved) == []  # comparable: same setting, different model
    assert moved.sha256 != base.sha256
    # different task: template, metric stays qa_f1 but task differs; trec also differs in chat policy
    assert set(differing_components(base, _sig(task="trec"))) >= {"task", "metric", "chat_policy", "decoding"}


def test_raw_completion_tasks_ignore_the_chat_template():
    other = copy.deepcopy(SUBJECT)
    other["chat_template"]["sha256"] = "f" * 64
    assert _sig(task="lcc").sha256 == _sig(task="lcc", subject=other).sha256
    assert _sig(task="hotpotqa").sha256 != _sig(task="hotpotqa", subject=other).sha256


def test_short_form_is_readable_and_roundtrip_detects_tampering():
    s = _sig()
    short = s.short()
    assert short.startswith("qa_f1_score.v1|task:hotpotqa#")
    assert (
        "chat:on" in short and "in:7500/middle" in short and "dec:greedy/32" in short and "data:6#" in short
    )
    d = s.to_dict()
    assert Signature.from_dict(d).sha256 == s.sha256
    d["components"]["truncation"]["max_input_tokens"] = 100
    with pytest.raises(ValueError, match="signature hash mismatch"):
        Signature.from_dict(d)
    with pytest.raises(ValueError, match="unknown signature components"):
        Signature({"weather": {}})


def test_describe_difference_names_the_changed_keys():
    a, b = _sig(), _sig(max_length=3500)
    assert describe_difference(a, b, "truncation") == "truncation: max_input_tokens=7500 vs 3500"


def test_aggregate_signature_depends_on_members_settings_only():
    a, b = _sig(), _sig(task="musique")
    agg = aggregate_signature("mean", {"hotpotqa": a, "musique": b})
    assert aggregate_signature("mean", {"musique": b, "hotpotqa": a}).sha256 == agg.sha256
    assert (
        aggregate_signature("mean", {"hotpotqa": a, "musique": _sig(task="musique", max_length=10)}).sha256
        != agg.sha256
    )
    assert aggregate_signature("mean", {"hotpotqa": a}).sha256 != agg.sha256


def test_unordered_hash_is_a_multiset_hash():
    h1, h2, h3 = UnorderedSha256(), UnorderedSha256(), UnorderedSha256()
    for x in ("a", "b", "c"):
        h1.update(x)
    for x in ("c", "a", "b"):
        h2.update(x)
    for x in ("a", "b", "c", "c"):
        h3.update(x)
    assert h1.hexdigest() == h2.hexdigest() != h3.hexdigest()
    assert dataset_hash(RECORDS) == dataset_hash(list(reversed(RECORDS)))
    assert dataset_hash(RECORDS) != dataset_hash(RECORDS + RECORDS[:1])  # a duplicate counts
    assert dataset_hash([]) != dataset_hash([{}])


def test_canonical_dumps_sorts_keys_and_sets():
    assert (
        canonical_dumps({"b": 1, "a": {2, 1}})
        == canonical_dumps({"a": {1, 2}, "b": 1})
        == b'{"a":[1,2],"b":1}'
    )
    with pytest.raises(TypeError, match="cannot fingerprint"):
        canonical_dumps({"x": object()})
