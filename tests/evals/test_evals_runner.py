"""``alignkit eval`` end to end on a tiny random model and on a scripted engine (protocol checks),
plus reports, resume and ``eval compare``."""

from __future__ import annotations

import json

import pytest
import torch

from alignkit.cli import main
from alignkit.evals.longbench import middle_truncate
from alignkit.evals.registry import get_task
from alignkit.evals.report import compare, load_results, reported_numbers, write_reports
from alignkit.evals.runner import EvalConfig, run_eval
from alignkit.generate.engine import Completion, GenerationResult, HFEngine


class ScriptedEngine:
    """Engine API stand-in: answers from a function of the prompt and records every call."""

    batch_size = 3
    max_context = 8192

    def __init__(self, tokenizer, answer):
        self.tokenizer, self.answer = tokenizer, answer
        self.model = torch.nn.Linear(2, 2)  # something to fingerprint
        self.calls = []

    def generate(self, prompts, params, *, apply_chat_template=True, progress=False):
        self.calls.append({"prompts": list(prompts), "params": params, "chat": apply_chat_template})
        return [
            GenerationResult(p, len(self.tokenizer(p)["input_ids"]), [Completion(self.answer(p), [], "stop")])
            for p in prompts
        ]


def _rec(context, inp, answers, length=100, classes=None, rid="0"):
    return {
        "context": context,
        "input": inp,
        "answers": answers,
        "length": length,
        "all_classes": classes,
        "_id": rid,
    }


@pytest.fixture()
def longbench_dir(tmp_path):
    d = tmp_path / "lb"
    d.mkdir()
    classes = ["Location", "Person", "Number"]
    rows = {
        "trec": [
            _rec("Where is Rome?\nType: Location", "Where is Oslo?", ["Location"], 3000, classes, "t0"),
            _rec("Who was Ada?\nType: Person", "Who is Bob?", ["Person"], 5000, classes, "t1"),
        ],
        "samsum": [
            _rec(
                "Dialogue: hi\nSummary: greeting.",
                "Dialogue: bye\nSummary:",
                ["They say bye."],
                9000,
                rid="s0",
            )
        ],
        "hotpotqa": [
            _rec(" ".join(f"filler{i}" for i in range(300)), "Which city?", ["Paris"], 200, rid="h0")
        ],
    }
    for name, recs in rows.items():
        (d / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return d


def _answer(prompt):
    if "Where is Oslo?" in prompt:
        return "Location\nPerson"  # first line only: correct
    if "Who is Bob?" in prompt:
        return "Number"
    if "Dialogue: bye" in prompt:
        return "They say bye."
    return "Paris"


def test_longbench_protocol_per_task(tokenizer, longbench_dir, tmp_path):
    eng = ScriptedEngine(tokenizer, _answer)
    cfg = EvalConfig(model="scripted", longbench_dir=str(longbench_dir), suite="longbench",
                     tasks=["hotpotqa", "trec", "samsum"], max_length=120, output_dir=str(tmp_path / "out"))  # fmt: skip
    res = run_eval(cfg, engine=eng, progress=False)
    by_task = {}
    for c in eng.calls:
        head = c["prompts"][0]
        name = (
            "trec"
            if head.startswith("Please determine")
            else "samsum"
            if head.startswith("Summarize")
            else "hotpotqa"
        )
        by_task.setdefault(name, c)
    assert len(eng.calls) == 3  # one batch per task (batch_size 3)
    hp, trec, sam = by_task["hotpotqa"], by_task["trec"], by_task["samsum"]
    # chat template applied by the engine to the *truncated* raw prompt, except raw-completion tasks
    assert hp["chat"] is True and trec["chat"] is False and sam["chat"] is False
    rendered = get_task("longbench", "hotpotqa").render(
        json.loads((longbench_dir / "hotpotqa.jsonl").read_text())
    )
    truncated, n_before, cut = middle_truncate(rendered, tokenizer, 120)
    assert cut and n_before > 120 and hp["prompts"] == [truncated]
    assert truncated.startswith("Answer the question based on the given passages") and truncated.endswith(
        "Answer:"
    )
    # greedy, per-dataset lengths; samsum stops at "\n" and generates at least one token
    assert (hp["params"].max_new_tokens, trec["params"].max_new_tokens, sam["params"].max_new_tokens) == (
        32,
        64,
        128,
    )
    assert all(c["params"].temperature == 0.0 for c in eng.calls)
    newline = tokenizer.encode("\n", add_special_tokens=False)[-1]
    assert sam["params"].stop_token_ids == [newline] and sam["params"].min_new_tokens == 1
    assert trec["params"].stop_token_ids == [] and trec["params"].min_new_tokens == 0
    # scores: trec first-line rule -> 1 and 0 -> 50.0; LongBench-E buckets from the length field
    t = res["tasks"]
    assert t["trec"]["score"] == 50.0 and t["samsum"]["score"] == 100.0 and t["hotpotqa"]["score"] == 100.0
    assert {k: v["score"] for k, v in t["trec"]["buckets"].items()} == {"0-4k": 100.0, "4-8k": 0.0}
    assert list(t["samsum"]["buckets"]) == ["8k+"]
    assert [s["truncated"] for s in res["samples"] if s["task"] == "hotpotqa"] == [True]
    board = res["aggregates"]["leaderboard"]["en"]
    assert board["categories"]["Few-shot Learning"]["score"] == 75.0 and board["avg"] is None
    assert res["aggregates"]["task_mean"]["score"] == pytest.approx((50 + 100 + 100) / 3, abs=0.01)


def test_every_reported_number_is_signed_and_reports_are_written(tokenizer, longbench_dir, tmp_path):
    cfg = EvalConfig(model="scripted", suite="longbench", longbench_dir=str(longbench_dir), tasks=["trec", "samsum"],
                     output_dir=str(tmp_path / "out"))  # fmt: skip
    res = run_eval(cfg, engine=ScriptedEngine(tokenizer, _answer), progress=False)
    paths = write_reports(res, tmp_path / "out")
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    loaded = load_results(paths["results"])
    rows = reported_numbers(loaded)
    assert {
        "trec",
        "samsum",
        "trec @0-4k",
        "mean over tasks",
        "EN Few-shot Learning",
        "all tasks @0-4k",
    } <= set(rows)
    for name, (score, sig) in rows.items():
        assert score is not None and len(sig.sha256) == 64, name
    md = paths["report"].read_text()
    assert "| trec | classification_score | 2 | 0 | 50.00 |" in md and "\\|chat:off\\|" in md
    assert len(loaded["samples"]) == 3 and loaded["samples"][0]["pred"] == "Location\nPerson"


def test_compare_marks_and_strict_refuses_incomparable_numbers(tokenizer, longbench_dir, tmp_path, capsys):
    def run(out, **kw):
        cfg = EvalConfig(model="scripted", suite="longbench", longbench_dir=str(longbench_dir), tasks=["trec", "hotpotqa"],
                         output_dir=str(tmp_path / out), **kw)  # fmt: skip
        write_reports(
            run_eval(cfg, engine=ScriptedEngine(tokenizer, _answer), progress=False), tmp_path / out
        )
        return load_results(tmp_path / out / "results.json")

    a, b = run("a"), run("b", max_length=100)
    same = compare(a, a)
    assert all(r["comparable"] and r["delta"] == 0 for r in same)
    rows = {r["name"]: r for r in compare(a, b)}
    # the max-length setting is part of every number (even where no prompt needed cutting)
    assert rows["trec"]["comparable"] is False and rows["hotpotqa"]["comparable"] is False
    assert rows["hotpotqa"]["reasons"] == ["truncation: max_input_tokens=7500 vs 100"]
    assert "member hotpotqa: truncation" in rows["mean over tasks"]["reasons"]
    assert main(["eval", "compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "NO: truncation" in out
    assert main(["eval", "compare", str(tmp_path / "a"), str(tmp_path / "b"), "--strict"]) == 2
    assert "not comparable" in capsys.readouterr().err


def test_mini_run_on_tiny_model_and_resume(tiny_lm, tmp_path):
    model, tok = tiny_lm
    cfg = EvalConfig(model="tiny", tasks=["mini_kv_retrieval", "mini_passage_count"], lengths=["200", "300"],
                     output_dir=str(tmp_path / "mini"), dtype="fp32")  # fmt: skip  (the engine here is fp32)
    res = run_eval(cfg, engine=HFEngine(model, tok, batch_size=2), progress=False)
    assert [s["length_bucket"] for s in res["samples"]] == ["200", "300", "200", "300"]
    assert set(res["aggregates"]["length_curve"]) == {"200", "300"}
    assert res["max_input_tokens"] == 1500  # the tiny model's 2048-token window -> 2000 - 500
    assert all(s["prompt_tokens"] > s["input_tokens"] for s in res["samples"])  # chat template added

    # second run: every prediction comes from the cache; the engine must not be called
    class Refuse(ScriptedEngine):
        max_context = 2048

        def generate(self, *a, **k):
            raise AssertionError("cached predictions should have been reused")

    again = Refuse(tok, None)
    again.model = model
    res2 = run_eval(cfg, engine=again, progress=False)
    assert [s["pred"] for s in res2["samples"]] == [s["pred"] for s in res["samples"]]
    assert res2["tasks"]["mini_kv_retrieval"]["signature"] == res["tasks"]["mini_kv_retrieval"]["signature"]
    # a different model invalidates the cache (its fingerprint is part of the key)
    other = ScriptedEngine(tok, lambda p: "x")
    other.max_context = 2048
    res3 = run_eval(cfg, engine=other, progress=False)
    assert {s["pred"] for s in res3["samples"]} == {"x"}


def test_config_errors_exit_2(tmp_path, capsys):
    assert main(["eval", "--suite", "longbench"]) == 2
    assert "needs longbench_dir" in capsys.readouterr().err
    assert main(["eval", "--longbench-dir", str(tmp_path), "--lengths", "1k"]) == 2
    assert "mini suite only" in capsys.readouterr().err
    assert main(["eval", "--tasks", "nope", "--limit", "1", "-o", str(tmp_path / "x")]) == 2
    assert "unknown mini task 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # no partial output
    assert main(["eval", "compare", str(tmp_path / "missing.json"), str(tmp_path / "other.json")]) == 2
    assert "results file not found" in capsys.readouterr().err


def test_longbench_e_reads_e_files_and_refuses_other_tasks(tokenizer, tmp_path):
    d = tmp_path / "lbe" / "data"
    d.mkdir(parents=True)
    recs = [
        _rec("ctx", "Where is Oslo?", ["Location"], n, ["Location", "Person"], f"e{n}")
        for n in (100, 5000, 12000)
    ]
    (d / "trec_e.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    cfg = EvalConfig(model="scripted", suite="longbench", longbench_dir=str(tmp_path / "lbe"), longbench_e=True,
                     tasks=["trec"], output_dir=str(tmp_path / "out"))  # fmt: skip
    res = run_eval(cfg, engine=ScriptedEngine(tokenizer, _answer), progress=False)
    assert res["suite"] == "longbench-e"
    assert {k: (v["n"], v["score"]) for k, v in res["tasks"]["trec"]["buckets"].items()} == {
        "0-4k": (1, 100.0), "4-8k": (1, 100.0), "8k+": (1, 100.0),
    }  # fmt: skip
    assert cfg.resolved_output_dir().name == "out"
    assert (
        EvalConfig(model="m", suite="longbench", longbench_dir="x", longbench_e=True)
        .resolved_output_dir()
        .name
        == "m-longbench-e"
    )
    assert (
        main(["eval", "--longbench-dir", str(tmp_path / "lbe"), "--longbench-e", "--tasks", "narrativeqa"])
        == 2
    )
