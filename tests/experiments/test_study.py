"""experiments/study.py: statistics on hand-computed cases, the results schema, journal, lock, held-out sets."""

from __future__ import annotations

import fcntl
import json
import math

import numpy as np
import pytest
import study

# ------------------------------------------------------------------------------------------ McNemar


@pytest.mark.parametrize(("b", "c", "p"), [
    (1, 6, 0.125),     # n = 7: P(X <= 1) = (1 + 7) / 128 = 1/16, two-sided 1/8
    (0, 5, 0.0625),    # n = 5: P(X = 0) = 1/32, two-sided 1/16
    (6, 1, 0.125),     # symmetric
    (2, 8, 0.109375),  # n = 10: (1 + 10 + 45) / 1024 = 56/1024, two-sided 112/1024
    (3, 3, 1.0),       # 2 * P(X <= 3 | n = 6) = 2 * 42/64 > 1 -> capped
    (0, 0, 1.0),       # no discordant pair
])
def test_mcnemar_exact_p_by_hand(b, c, p):
    assert study.mcnemar_p(b, c) == pytest.approx(p, abs=1e-12)


def test_mcnemar_counts_discordant_pairs_pooled_over_seeds():
    # seed 0: a right / b wrong on items 0; seed 1: a wrong / b right on items 0..2, concordant elsewhere
    a = [[1, 1, 0, 1], [0, 0, 0, 1]]
    bb = [[0, 1, 0, 1], [1, 1, 1, 1]]
    res = study.mcnemar_exact(a, bb)
    assert (res["b"], res["c"]) == (1, 3)
    assert res["p"] == pytest.approx(2 * (1 + 4) / 16)  # n = 4: P(X <= 1) = 5/16 -> 0.625


def test_mcnemar_matches_scipy_binomtest():
    scipy_stats = pytest.importorskip("scipy.stats")
    for b in range(0, 15):
        for c in range(0, 15):
            if b + c:
                want = scipy_stats.binomtest(b, b + c, 0.5).pvalue
                assert study.mcnemar_p(b, c) == pytest.approx(want, rel=1e-9), (b, c)


def test_mcnemar_refuses_non_binary_and_unpaired():
    with pytest.raises(study.StudyError, match="0/1"):
        study.mcnemar_exact([0.5, 1], [1, 0])
    with pytest.raises(study.StudyError, match="share seeds and items"):
        study.mcnemar_exact([[1, 0]], [[1, 0], [0, 1]])


# ---------------------------------------------------------------------------------------- bootstrap


def test_bootstrap_interval_covers_a_known_mean_about_95_percent():
    """Bernoulli(0.3), 200 items, one seed: over 300 fixed-seed data sets the interval covers 0.3 ~95 % of the time."""
    rng = np.random.default_rng(1234)
    hits = 0
    for t in range(300):
        v = (rng.random(200) < 0.3).astype(float)
        lo, hi = study.bootstrap_ci(v, n_boot=1000, seed=t)["ci95"]
        hits += lo <= 0.3 <= hi
    assert 0.90 <= hits / 300 <= 0.985


def test_bootstrap_constant_values_give_a_point_interval_and_is_deterministic():
    assert study.bootstrap_ci(np.full((3, 50), 0.25)) == {"mean": 0.25, "ci95": [0.25, 0.25]}
    v = np.random.default_rng(0).random((3, 40))
    assert study.bootstrap_ci(v, seed=7) == study.bootstrap_ci(v, seed=7)


def test_bootstrap_resamples_seeds_too():
    """Seed-to-seed offsets widen the interval: the same items with large per-seed shifts vs without."""
    rng = np.random.default_rng(0)
    items = rng.random(300)
    flat = np.stack([items, items, items])
    shifted = flat + np.array([[-0.2], [0.0], [0.2]])
    w_flat = np.diff(study.bootstrap_ci(flat)["ci95"])[0]
    w_shift = np.diff(study.bootstrap_ci(shifted)["ci95"])[0]
    assert w_shift > 3 * w_flat


def test_paired_bootstrap_exact_shift_and_identical_arms():
    v = np.random.default_rng(0).random((2, 100))
    res = study.paired_bootstrap(v + 0.1, v, n_boot=999)
    assert res["diff"] == pytest.approx(0.1) and res["ci95"] == pytest.approx([0.1, 0.1])
    assert res["p"] == pytest.approx(1 / 1000)  # no replicate <= 0
    assert study.paired_bootstrap(v, v)["p"] == 1.0


def test_pairing_removes_shared_item_variance():
    """Arms that differ by a small shift on items of very different difficulty: the paired interval
    excludes 0, while the arms' own intervals overlap."""
    rng = np.random.default_rng(3)
    items = rng.normal(0, 1.0, 400)
    a, b = items + 0.05 + rng.normal(0, 0.05, 400), items + rng.normal(0, 0.05, 400)
    lo, hi = study.paired_bootstrap(a, b)["ci95"]
    assert 0 < lo < hi
    assert study.bootstrap_ci(a)["ci95"][0] < study.bootstrap_ci(b)["ci95"][1]


# ------------------------------------------------------------------------------------------- schema


def _arms():
    return {"x": [[1, 0, 1, 1], [1, 1, 0, 1], [0, 1, 1, 1]], "y": [[0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 1, 1]]}


def _results(**kw):
    args = dict(name="t", claim=8, command=".venv/bin/python experiments/x.py", quick=True, heldout="h",
                seeds=[0, 1, 2], metric="m", matched_by="equal steps", arms=_arms(), pairs=[("x", "y")],
                headline="h", n_boot=200)
    args.update(kw)
    return study.build_results(**args)


def test_build_results_is_valid_and_complete():
    obj = _results()
    assert obj["schema"] == study.SCHEMA and obj["n_heldout"] == 4 and obj["seeds"] == [0, 1, 2]
    for key in ("command", "commit", "date", "machine", "arms", "comparisons"):
        assert key in obj
    assert set(obj["machine"]["cpu_flags"]) >= {"avx2", "avx512_bf16", "amx_bf16"}
    assert obj["arms"]["x"]["per_seed"] == {"0": 0.75, "1": 0.75, "2": 0.75}
    (cmp,) = obj["comparisons"]
    # discordant (x right, y wrong): 2 + 2 + 1 over the three seeds, none the other way: p = 2 / 2**5
    assert cmp["mcnemar"] == {"b": 5, "c": 0, "p": pytest.approx(0.0625)}
    json.dumps(obj)  # serialisable as is


def test_a_full_run_needs_500_items_and_3_seeds():
    with pytest.raises(study.StudyError, match="500 held-out items and >= 3 seeds"):
        _results(quick=False)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda o: o["arms"]["x"].update(mean=2.0), "outside ci95"),
    (lambda o: o["arms"]["x"]["per_seed"].pop("2"), "per_seed keys"),
    (lambda o: o["comparisons"][0].update(b="z"), "no arm 'z'"),
    (lambda o: o.pop("command"), "command"),
    (lambda o: o["machine"].pop("torch_threads"), "torch_threads"),
])
def test_validator_names_the_problem(edit, message):
    obj = _results()
    edit(obj)
    with pytest.raises(study.StudyError, match=message):
        study.validate_results(obj)


def test_write_results_writes_json_md_and_plot(tmp_path):
    path = study.write_results(_results(), tmp_path / "t")
    assert json.loads(path.read_text())["name"] == "t"
    md = (tmp_path / "t" / "results.md").read_text()
    assert "| x | 0.750 |" in md and "quick smoke run" in md and "5 / 0, 0.0625" in md
    assert (tmp_path / "t" / "results.png").read_bytes()[:4] == b"\x89PNG"


def test_committed_results_discovery_picks_only_the_study_schema(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "results.json").write_text(json.dumps(_results()))
    (tmp_path / "legacy.json").write_text(json.dumps({"command": "old"}))
    assert study.committed_study_results(tmp_path) == [tmp_path / "a" / "results.json"]


def test_every_committed_study_result_is_valid():
    """Every experiments/results/**.json that says ``"schema": "alignkit-study/1"`` passes the validator
    (the older results without the tag are checked by tests/test_docs_and_configs.py only)."""
    errors = []
    for path in study.committed_study_results():
        try:
            study.validate_results(json.loads(path.read_text(encoding="utf-8")), str(path))
        except study.StudyError as e:
            errors.append(str(e))
    assert not errors, "\n".join(errors)


# ------------------------------------------------------------------------------- journal and budget


def test_run_units_stops_at_the_budget_and_resumes(tmp_path):
    calls = []

    def unit(k):
        def fn():
            calls.append(k)
            return {"k": k}
        return fn

    units = [(f"u{k}", unit(k)) for k in range(3)]
    j = study.Journal(tmp_path, {"a": 1})
    # a spent budget still runs one unit per invocation (progress), then stops before the next
    assert study.run_units(j, units, budget_s=0.0, log=lambda s: None) is False and calls == [0]
    j = study.Journal(tmp_path, {"a": 1})  # a new invocation reads what the last one finished
    assert j.done("u0") and j.get("u0") == {"k": 0} and not j.done("u1")
    assert study.run_units(j, units, budget_s=None, log=lambda s: None) is True and calls == [0, 1, 2]
    assert study.run_units(j, units, budget_s=0.0, log=lambda s: None) is True and calls == [0, 1, 2]


def test_a_failed_unit_keeps_the_finished_ones(tmp_path):
    def boom():
        raise RuntimeError("killed")

    j = study.Journal(tmp_path, {})
    with pytest.raises(RuntimeError):
        study.run_units(j, [("a", lambda: 1), ("b", boom)], None, log=lambda s: None)
    assert json.loads((tmp_path / "journal.json").read_text())["units"] == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["journal.json"]  # no temporary file left behind


def test_journal_refuses_another_configuration(tmp_path):
    study.Journal(tmp_path, {"seeds": [0]}).record("u", 1)
    with pytest.raises(study.StudyError, match="different configuration"):
        study.Journal(tmp_path, {"seeds": [0, 1]})


def test_heavy_lock_is_exclusive(tmp_path):
    lock = tmp_path / "heavy.lock"
    with study.heavy_lock(str(lock)):
        with open(lock) as other, pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with open(lock) as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released


# ------------------------------------------------------------------------------------ held-out sets


def test_math_heldout_has_500_items_disjoint_and_deterministic():
    from alignkit.data.verifiable import is_heldout

    train, held = study.math_split(1000, 500)
    assert len(held) == 500 and [p["id"] for p in held] == [p["id"] for p in study.math_split(10, 500)[1]]
    assert all(is_heldout(p["id"], study.HELDOUT_FRACTION) for p in held)
    other_train, _ = study.math_split(1000, 1, seed=1)  # another generator seed never trains on them
    assert not {p["id"] for p in other_train} & {p["id"] for p in held}
    assert not {p["question"] for p in train} & {p["question"] for p in held}


def test_language_heldout_has_500_windows_disjoint_from_its_train_side():
    train, held = study.language_split(500, 500)
    assert len(held) == 500 and len(train) == 500
    assert not {r["text"] for r in train} & {r["text"] for r in held}
    assert all(len(r["text"]) >= study.LANGUAGE_WINDOW for r in held)
    assert study.language_split(1, 500)[1] == held


def test_mini_suite_records_are_the_offline_suite():
    recs = study.mini_suite_records(samples_per_length=1, lengths=("1k",))
    assert set(recs) >= {"mini_passage_retrieval", "mini_kv_retrieval"} and all(len(v) == 1 for v in recs.values())


def test_assert_disjoint_refuses_overlap():
    with pytest.raises(study.StudyError, match="share their question"):
        study.assert_disjoint([{"question": "q"}], [{"question": "q"}], ("question",))


def test_ifeval_split_is_the_demo_generator_and_disjoint():
    from alignkit.data.verifiable import make_splits

    train, held = study.ifeval_split(40, 500)
    assert len(train) == 40 and len(held) == 500
    assert held == make_splits(40, 500)[1]  # the same rows the demo holds out
    assert not {r["key"] for r in train} & {r["key"] for r in held}


def test_per_item_nll_is_the_log_perplexity_of_each_item(tiny_lm):
    from alignkit.evals.cotk import perplexity

    model, tok = tiny_lm
    refs = ["one two three", "a b"]
    got = study.per_item_nll(model, tok, refs)
    for r, g in zip(refs, got, strict=True):
        assert g == pytest.approx(math.log(perplexity(model, tok, [r])["perplexity"]), rel=1e-5)


def test_language_nll_scores_the_first_heldout_windows(tmp_path, tiny_lm):
    model, tok = tiny_lm
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    _, held = study.language_split(0, 3)
    got = study.language_nll(str(tmp_path / "m"), 3)
    assert got == pytest.approx(study.per_item_nll(model, tok, [r["text"] for r in held]), rel=1e-5)
    assert [r["id"] for r in held] == [r["id"] for r in study.language_split(500, 500)[1][:3]]
