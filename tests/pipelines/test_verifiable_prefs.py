"""Preference pairs from verified samples: pair rule, drop counts, K-way rows, pass rate, the command."""

from __future__ import annotations

import json
import os
import shlex

import pytest

from alignkit.cli import main, registry
from alignkit.commands import resolve
from alignkit.data.rows import parse_row
from alignkit.data.verifiable import verify
from alignkit.generate.engine import Completion, GenerationResult, SamplingParams
from alignkit.pipelines import verifiable_prefs as vp


class ScriptedEngine:
    """Returns scripted (text, finish_reason) samples per prompt text; records every call."""

    def __init__(self, script: dict[str, list[tuple[str, str]]]):
        self.script = script
        self.calls: list[tuple[list, SamplingParams]] = []

    def generate(self, prompts, params, *, apply_chat_template=True, progress=False):
        self.calls.append((list(prompts), params))
        out = []
        for p in prompts:
            samples = self.script[p][: params.n]
            assert len(samples) == params.n, f"script for {p!r} has {len(samples)} samples, asked {params.n}"
            comps = [
                Completion(text=t, token_ids=[1] * (len(t.split()) + 1), finish_reason=f) for t, f in samples
            ]
            out.append(GenerationResult(prompt=f"<user>{p}", prompt_tokens=5, completions=comps))
        return out


def _row(key, prompt, instruction):
    iid, kwargs = instruction
    return {"key": key, "prompt": prompt, "instruction_id_list": [iid], "kwargs": [kwargs]}


# deterministic checks (no language detection): no word in all capitals; no comma
LOWER = ("change_case:capital_word_frequency", {"capital_frequency": 1, "capital_relation": "less than"})
NOCOMMA = ("punctuation:no_comma", {})
ROWS = [
    _row("a", "all pass", LOWER),
    _row("b", "all fail", LOWER),
    _row("c", "mixed", NOCOMMA),
    _row("d", "only empty failures", LOWER),
    _row("e", "truncated pass", LOWER),
]
SCRIPT = {
    "all pass": [("yes.", "stop"), ("sure thing.", "stop"), ("ok", "stop"), ("fine", "stop")],
    "all fail": [("YES.", "stop"), ("NO.", "stop"), ("MAYBE.", "stop"), ("", "stop")],
    # passing: idx 1 (13 chars) and 3 (9 chars) -> chosen 3; failing lengths 11, 30 -> closest to 9 is idx 0
    "mixed": [
        ("Red, green.", "stop"),
        ("Blue and gold", "stop"),
        ("One, two, three, four, five, six", "stop"),
        ("Only blue", "stop"),
    ],
    "only empty failures": [("all good", "stop"), ("   ", "stop"), ("", "stop"), ("fine", "stop")],
    # a lowercase text cut by the token budget is not a pass; the other sample passes
    "truncated pass": [
        ("lowercase but cut", "length"),
        ("UPPER CASE", "stop"),
        ("done here", "stop"),
        ("NOPE", "stop"),
    ],
}


def _scored():
    engine = ScriptedEngine(SCRIPT)
    params = SamplingParams(max_new_tokens=8, temperature=0.8, n=4)
    return vp.score_samples(engine, ROWS, params), engine


def test_score_samples_marks_truncated_samples_as_failing():
    scored, engine = _scored()
    assert [s["key"] for s in scored] == ["a", "b", "c", "d", "e"]
    assert [x["passed"] for x in scored[4]["samples"]] == [False, False, True, False]
    assert [x["follow"] for x in scored[4]["samples"]] == [[True], [False], [True], [False]]
    assert verify("lowercase but cut", ROWS[4])  # the text alone would pass
    assert engine.calls[0][1].n == 4


def test_pair_rule_shortest_pass_vs_closest_length_failure():
    scored, _ = _scored()
    pairs, kway, stats = vp.build_pairs(scored)
    by_id = {p["key"]: p for p in pairs}
    assert set(by_id) == {"c", "e"}
    assert by_id["c"]["chosen"] == [{"role": "assistant", "content": "Only blue"}]
    assert by_id["c"]["rejected"] == [{"role": "assistant", "content": "Red, green."}]
    assert by_id["c"]["prompt"] == [{"role": "user", "content": "mixed"}]
    assert (by_id["c"]["instruction_id_list"], by_id["c"]["kwargs"]) == (["punctuation:no_comma"], [{}])
    # chosen "done here" (9 chars); failing "lowercase but cut" (17), "UPPER CASE" (10), "NOPE" (4) -> 10
    assert by_id["e"]["chosen"][0]["content"] == "done here"
    assert by_id["e"]["rejected"][0]["content"] == "UPPER CASE"


def test_drop_counts_and_kway_rows():
    scored, _ = _scored()
    pairs, kway, stats = vp.build_pairs(scored)
    assert stats["prompts"] == 5 and stats["samples"] == 20
    assert stats["pairs"] == 2
    assert stats["dropped_all_pass"] == 1
    assert stats["dropped_all_fail"] == 1
    assert stats["dropped_no_nonempty_rejected"] == 1
    assert stats["truncated_samples"] == 1
    # passes: a 4, c 2, d 2, e 1 -> 9 of 20
    assert stats["sample_pass_rate"] == pytest.approx(9 / 20)
    assert stats["kway_rows"] == 2 and [k["key"] for k in kway] == ["c", "e"]
    assert stats["kway_dropped_equal_rewards"] == 2
    assert stats["kway_dropped_empty_sample"] == 1
    assert kway[0]["rewards"] == [0.0, 1.0, 0.0, 1.0]
    assert kway[0]["completions"][2] == [{"role": "assistant", "content": "One, two, three, four, five, six"}]
    lower, nocomma = stats["by_type"][LOWER[0]], stats["by_type"][NOCOMMA[0]]
    assert lower["prompts"] == 4 and lower["pairs"] == 1
    assert lower["sample_follow_rate"] == pytest.approx(7 / 16)  # a 4, b 0, d 2, e 1 (the cut one is not followed)
    assert nocomma["sample_follow_rate"] == pytest.approx(0.5)


def test_sft_rows_keep_the_shortest_pass_of_every_prompt_with_one():
    scored, _ = _scored()
    sft = vp.build_sft(scored)
    assert [r["key"] for r in sft] == ["a", "c", "d", "e"]  # "b" has no passing sample
    assert [r["completion"][0]["content"] for r in sft] == ["ok", "Only blue", "fine", "done here"]
    ex = parse_row(json.loads(json.dumps(sft[1])), "sft", "sft.jsonl:2", 1)
    assert ex.conversational and ex.prompt == [{"role": "user", "content": "mixed"}]


def test_rows_load_with_the_trainers_row_parser():
    scored, _ = _scored()
    pairs, kway, _ = vp.build_pairs(scored)
    ex = parse_row(json.loads(json.dumps(pairs[0])), "preference", "prefs.jsonl:1", 0)
    assert ex.conversational and ex.completions[0] != ex.completions[1]
    assert ex.meta["key"] == "c" and ex.meta["instruction_id_list"] == ["punctuation:no_comma"]
    ex = parse_row(json.loads(json.dumps(kway[0])), "kway", "kway.jsonl:1", 0)
    assert ex.rewards == [0.0, 1.0, 0.0, 1.0] and len(ex.completions) == 4


def test_choose_pair_ties_break_on_sample_index():
    samples = [
        {"text": t, "passed": p} for t, p in [("bb", False), ("aa", True), ("cc", True), ("dd", False)]
    ]
    assert vp.choose_pair(samples) == (1, 0)
    assert vp.choose_pair([{"text": "x", "passed": True}]) is None


def test_pass_rate_defaults_to_greedy_and_reports_ifeval_metrics():
    script = {
        "p1": [("all lower", "stop")],
        "p2": [("UPPER", "stop")],
        "p3": [("no commas here", "stop")],
        "p4": [("lower but long", "length")],
        "p5": [("*NO*, sir", "stop")],
    }
    rows = [_row("1", "p1", LOWER), _row("2", "p2", LOWER), _row("3", "p3", NOCOMMA), _row("4", "p4", LOWER),
            {"key": "5", "prompt": "p5", "instruction_id_list": [LOWER[0], NOCOMMA[0]], "kwargs": [LOWER[1], {}]}]
    engine = ScriptedEngine(script)
    r = vp.pass_rate(engine, rows)
    params = engine.calls[0][1]
    assert params.temperature == 0.0 and params.n == 1 and params.max_new_tokens == vp.DEFAULT_MAX_NEW_TOKENS
    # scored as generated (IFEval): the cut p4 counts; p5 strict: "NO" is a capital word and there is a comma;
    # loose: removing "*" does not help, but dropping the (only) line leaves nothing -> still both fail
    assert (r["n"], r["truncated"], r["n_instructions"]) == (5, 1, 6)
    assert r["prompt_level_strict_acc"] == r["pass_rate"] == pytest.approx(3 / 5)
    assert r["inst_level_strict_acc"] == pytest.approx(3 / 6)
    assert r["prompt_level_loose_acc"] == pytest.approx(3 / 5)
    lo, hi = r["intervals"]["prompt_level_strict_acc"]
    assert lo < 0.6 < hi
    assert r["instructions"][NOCOMMA[0]] == {"n": 2, "strict_acc": 0.5, "loose_acc": 0.5}
    assert [x["follow_strict"] for x in r["results"]] == [[True], [False], [True], [True], [False, False]]


def test_main_writes_all_files_from_generated_prompts(tmp_path, monkeypatch):
    """The command-line entry end to end, with the engine replaced by one that answers by rule."""
    from alignkit.generate import engine as engine_mod

    class RuleEngine:
        # Sample j of each prompt: even j -> a plain short answer, odd j -> one with commas and capitals.
        def generate(self, prompts, params, *, apply_chat_template=True, progress=False):
            texts = ["forty two", "FORTY, TWO, and more."]
            return [
                GenerationResult(p, 3, [Completion(texts[j % 2], [1, 2], "stop") for j in range(params.n)])
                for p in prompts
            ]

    monkeypatch.setattr(
        engine_mod.HFEngine, "from_pretrained", classmethod(lambda cls, *a, **k: RuleEngine())
    )
    out = tmp_path / "demo"
    argv = ["--out", str(out), "--n-prompts", "30", "--n-heldout", "7", "--k", "2", "--seed", "3", "--base-pass-rate",
            "--samples-out", str(tmp_path / "s" / "samples.jsonl")]
    rc = main(["data", "verifiable-prefs", *argv])
    assert rc == 0
    summary = json.loads((out / "verifiable_summary.json").read_text())
    samples = [json.loads(x) for x in (tmp_path / "s" / "samples.jsonl").read_text().splitlines()]
    pairs = [json.loads(x) for x in (out / "verifiable_prefs.jsonl").read_text().splitlines()]
    heldout = [json.loads(x) for x in (out / "verifiable_heldout.jsonl").read_text().splitlines()]
    assert summary["train_prompts"] == 30 and len(heldout) == 7
    assert summary["pairs"] == len(pairs)
    assert (
        summary["pairs"]
        + summary["dropped_all_pass"]
        + summary["dropped_all_fail"]
        + summary["dropped_no_nonempty_rejected"]
        == 30
    )
    # every recorded verdict is the IFEval checkers' (strict, all instructions) on the sample
    assert all(s["passed"] == verify(s["text"], x) for x in samples for s in x["samples"])
    assert any(s["passed"] for x in samples for s in x["samples"])
    assert all(p["chosen"][0]["content"] != p["rejected"][0]["content"] for p in pairs)
    assert 0.0 <= summary["heldout_greedy_pass_rate"]["pass_rate"] <= 1.0
    assert summary["command"].startswith("alignkit data verifiable-prefs ") and "n_prompts=30" in summary["command"]
    command = registry()["data verifiable-prefs"]  # the recorded command re-runs the same config
    assert resolve(command, shlex.split(summary["command"])[3:])[0] == resolve(command, argv)[0]
    sft = (out / "verifiable_sft.jsonl").read_text().splitlines()
    assert summary["sft_rows"] == len(sft) >= summary["pairs"]
    assert len(samples) == 30 and all(len(x["samples"]) == 2 for x in samples)
    assert not list(out.glob(".*"))  # no temp files left behind
    umask = os.umask(0)
    os.umask(umask)
    assert (out / "verifiable_prefs.jsonl").stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--k", "1"], "k: Input should be greater than or equal to 2"),
        (["--temperature", "0"], "temperature: Input should be greater than 0"),
        (["--n-heldout", "0", "--base-pass-rate"], "base_pass_rate needs held-out prompts"),
    ],
)
def test_command_refuses_useless_option_combinations(tmp_path, capsys, argv, message):
    assert main(["data", "verifiable-prefs", "--out", str(tmp_path / "x"), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_real_sampling_on_the_embedded_model(tmp_path):
    """A small real run: greedy pass rate and K=2 sampling through the shared engine on SmolLM2-135M."""
    from alignkit.data.verifiable import make_splits
    from alignkit.generate.engine import HFEngine

    train, held = make_splits(2, 2, seed=11)
    engine = HFEngine.from_pretrained("smollm2-135m-instruct", batch_size=8)
    r = vp.pass_rate(engine, held, SamplingParams(max_new_tokens=16))
    assert r["n"] == 2 and 0 <= r["pass_rate"] <= 1
    for res, row in zip(r["results"], held, strict=True):
        assert res["text"].strip(), "greedy answers to these prompts are never empty"
        assert all(res["follow_strict"]) == verify(res["text"], row)
    import torch

    torch.manual_seed(0)
    scored = vp.score_samples(engine, train, SamplingParams(max_new_tokens=16, temperature=1.0, n=2))
    texts = [s["text"] for item in scored for s in item["samples"]]
    assert len(texts) == 4 and len(set(texts)) > 1  # sampling, not four copies of one answer
    pairs, kway, stats = vp.build_pairs(scored)
    assert (
        stats["pairs"]
        + stats["dropped_all_pass"]
        + stats["dropped_all_fail"]
        + stats["dropped_no_nonempty_rejected"]
        == 2
    )


def test_shipped_demo_files_are_consistent_with_the_current_verifier():
    """The shipped JSONL must load with the trainers' reader and agree with today's verifier rules;
    a verifier change without regenerating the files (docs/demo_data.md) fails here."""
    from alignkit.data.rows import read_rows
    from alignkit.data.verifiable import (
        DEMO_HELDOUT,
        DEMO_KWAY,
        DEMO_PREFS,
        DEMO_SFT,
        DEMO_SUMMARY,
        is_heldout,
        load_prompt_rows,
        make_splits,
    )

    pairs = read_rows(DEMO_PREFS, "preference")
    kway = read_rows(DEMO_KWAY, "kway")
    sft = read_rows(DEMO_SFT, "sft")
    heldout = load_prompt_rows(str(DEMO_HELDOUT))
    summary = json.loads(DEMO_SUMMARY.read_text())
    assert 50 <= len(pairs) <= 400, "a few hundred pairs at most, and enough to train on"
    assert (summary["pairs"], summary["kway_rows"], summary["sft_rows"]) == (len(pairs), len(kway), len(sft))
    assert len(heldout) == summary["heldout_prompts"]
    frac = 0.25  # the documented command uses the default --heldout-fraction
    assert len(heldout) >= 500 and all(is_heldout(r["key"], frac) for r in heldout)
    # the generator still makes these rows (a generator change without regenerating the files fails here)
    assert heldout == make_splits(0, len(heldout), seed=summary["seed"])[1]
    assert not {ex.meta["key"] for ex in sft} & {r["key"] for r in heldout}
    for ex in pairs:
        assert not is_heldout(ex.meta["key"], frac)
        chosen, rejected = (c[0]["content"] for c in ex.completions)
        assert verify(chosen, {**ex.meta, "prompt": ex.prompt}), ex.meta["key"]
        assert chosen != rejected and rejected.strip()
    for ex in sft:
        assert verify(ex.completions[0][0]["content"], {**ex.meta, "prompt": ex.prompt})
    for ex in kway:
        assert 0.0 < sum(ex.rewards) < len(ex.rewards)
        for comp, reward in zip(ex.completions, ex.rewards, strict=True):
            if reward == 1.0:
                assert verify(comp[0]["content"], {**ex.meta, "prompt": ex.prompt})
