"""``alignkit eval bfcl``: hand-checked checker rules, the results files, the command, generation settings.
(Agreement with BFCL's own code on the real data is tests/evals/test_bfcl_oracle.py.)"""

from __future__ import annotations

import json

import pytest

from alignkit.annotate.agreement import wilson_interval
from alignkit.cli import main
from alignkit.evals import bfcl

DOC = {"name": "geo.area", "description": "Area.", "parameters": {"type": "dict", "required": ["x", "items"], "properties": {
    "x": {"type": "float", "description": ""}, "unit": {"type": "string", "description": ""},
    "items": {"type": "array", "items": {"type": "integer"}, "description": ""},
    "opts": {"type": "dict", "description": ""}}}}
TRUTH = {"geo.area": {"x": [1.0], "unit": ["cm", ""], "items": [[1, 2]], "opts": [{"k": ["v"]}, ""]}}
SIMPLE = {"id": "simple_python_x", "category": "simple_python", "function": [DOC], "ground_truth": [TRUTH]}


@pytest.mark.parametrize("output,valid,error_type", [
    ("[geo.area(x=1, items=[1, 2])]", True, None),  # int accepted for float; optionals omitted
    ("geo.area(x=1.0, unit='C.M', items=[1,2])", True, None),  # brackets added; case and punctuation ignored
    ("```\n[geo.area(x=1.0, items=[1, 2], opts={'k': 'V'})]\n```", True, None),  # fences stripped
    ("[geo.area(x=1.0, items=(1, 2))]", False, "type_error:simple"),  # a tuple is a list only for type 'tuple'
    ("[geo.area(x='1', items=[1, 2])]", False, "type_error:simple"),
    ("[geo.area(x=1.0, items=['1', '2'])]", False, "type_error:nested"),
    ("[geo.area(items=[1, 2])]", False, "simple_function_checker:missing_required"),
    ("[geo.area(x=1.0, items=[1, 2], y=3)]", False, "simple_function_checker:unexpected_param"),
    ("[geo.area(x=2.0, items=[1, 2])]", False, "value_error:others"),
    ("[geo.area(x=1.0, items=[2, 1])]", False, "value_error:list/tuple"),
    ("[geo.area(x=1.0, items=[1, 2], unit='m')]", False, "value_error:string"),
    ("[geo.area(x=1.0, items=[1, 2], opts={'q': 'v'})]", False, "value_error:dict_key"),
    ("[area(x=1.0, items=[1, 2])]", False, "simple_function_checker:wrong_func_name"),
    ("[geo.area(x=1.0, items=[1, 2]), geo.area(x=1.0, items=[1, 2])]", False, "simple_function_checker:wrong_count"),
    ("Sure! [geo.area(x=1.0, items=[1, 2])]", False, "ast_decoder:decoder_failed"),
])
def test_checker_rules_hand_checked(output, valid, error_type):
    row = bfcl.score_entry(SIMPLE, output)
    assert (row["valid"], row["error_type"]) == (valid, error_type), row


def test_optional_answer_that_is_not_marked_optional_must_be_given():
    entry = {**SIMPLE, "ground_truth": [{"geo.area": {**TRUTH["geo.area"], "unit": ["cm"]}}]}
    assert bfcl.score_entry(entry, "[geo.area(x=1.0, items=[1, 2])]")["error_type"] == \
        "simple_function_checker:missing_optional"


def test_parallel_calls_match_in_any_order_and_count():
    doc = {"name": "f", "description": "", "parameters": {"type": "dict", "required": ["a"],
                                                           "properties": {"a": {"type": "integer", "description": ""}}}}
    entry = {"id": "parallel_x", "category": "parallel", "function": [doc],
             "ground_truth": [{"f": {"a": [1]}}, {"f": {"a": [2]}}]}
    assert bfcl.score_entry(entry, "[f(a=2), f(a=1)]")["valid"]
    assert bfcl.score_entry(entry, "[f(a=1), f(a=1)]")["error_type"] == \
        "parallel_function_checker_no_order:cannot_find_match"
    assert bfcl.score_entry(entry, "[f(a=1)]")["error_type"] == "parallel_function_checker_no_order:wrong_count"


def test_irrelevance_and_relevance():
    entry = {"id": "irrelevance_x", "category": "irrelevance", "function": [DOC]}
    assert bfcl.score_entry(entry, "I cannot answer: no function fits.")["valid"]
    assert bfcl.score_entry(entry, "[]")["valid"]
    assert bfcl.score_entry(entry, "[geo.area(x=1)]")["error_type"] == "irrelevance_error:decoder_success"
    rel = {**entry, "category": "live_relevance"}
    assert bfcl.score_entry(rel, "[geo.area(x=1)]")["valid"]
    assert bfcl.score_entry(rel, "[]")["error_type"] == "relevance_error:decoder_failed"


def test_groups_follow_bfcl_and_refuse_to_guess_missing_members():
    per = {c: {"accuracy": 0.5, "n": 10} for c in bfcl.CATEGORIES}
    per["live_simple"] = {"accuracy": 1.0, "n": 30}  # weighted: (30*1 + 3*10*0.5) / 60
    per["simple_python"] = {"accuracy": 0.9, "n": 400}  # unweighted: (0.9 + 3*0.5) / 4
    s = bfcl.summarise(per)
    assert s["groups"]["live"]["accuracy"] == pytest.approx(45 / 60)
    assert s["groups"]["non_live"]["accuracy"] == pytest.approx(0.6)
    assert s["groups"]["irrelevance"]["accuracy"] == pytest.approx(0.5)
    assert s["overall"]["accuracy"] == pytest.approx((0.6 + 0.75 + 0.5) / 3)
    del per["parallel"]
    s = bfcl.summarise(per)
    assert s["groups"]["non_live"]["accuracy"] is None and s["groups"]["non_live"]["missing"] == ["parallel"]
    assert s["overall"]["accuracy"] is None and s["overall"]["missing"] == ["non_live"]


def _write_results(tmp_path, rows):
    path = tmp_path / "outputs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


ROWS = [
    {"id": "simple_python_0", "result": "[calculate_triangle_area(base=10, height=5)]"},
    {"id": "simple_python_1", "result": "The factorial of 5 is 120."},
    {"id": "simple_python_2", "result": "[math.hypot(x=4, y=6)]"},
    {"id": "irrelevance_0", "result": "None of the functions applies."},
    {"id": "irrelevance_1", "result": "[determine_body_mass_index(weight=1, height=2)]"},
]


def test_command_scores_given_outputs(tmp_path):
    out = tmp_path / "run"
    args = ["eval", "bfcl", "--results", _write_results(tmp_path, ROWS), "--categories", "simple_python,irrelevance",
            "--limit", "3", "--output-dir", str(out)]
    assert main(args) == 0
    res = json.loads((out / "results.json").read_text())
    sp, irr = res["categories"]["simple_python"], res["categories"]["irrelevance"]
    assert (sp["n"], sp["correct"], sp["of"]) == (3, 1, 400) and sp["accuracy"] == pytest.approx(1 / 3)
    assert sp["ci95"] == [round(x, 4) for x in wilson_interval(1, 3)]
    assert sp["errors"] == {"ast_decoder:decoder_failed": 1, "value_error:others": 1}
    assert (irr["n"], irr["correct"]) == (2, 1)
    assert res["groups"]["non_live"]["accuracy"] is None and res["overall"]["accuracy"] is None
    sig = sp["signature"]["components"]
    assert sig["decoding"]["strategy"] == "given" and sig["dataset"]["n"] == 3
    assert sig["protocol"]["prompt_format"] == bfcl.PROMPT_FORMAT
    rows = [json.loads(line) for line in (out / "scored.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [r["id"] for r in ROWS]
    assert rows[0]["calls"] == [{"calculate_triangle_area": {"base": 10, "height": 5}}] and rows[0]["valid"]
    assert "parse_error" in rows[1] and rows[1]["error_type"] == "ast_decoder:decoder_failed"
    assert rows[2]["output"] == ROWS[2]["result"] and rows[2]["error_type"] == "value_error:others"
    assert (out / "config.yaml").is_file()


def test_whole_single_turn_set_scores_in_seconds(tmp_path):
    entries, _ = bfcl.select_entries(bfcl.BfclConfig())
    rows = [{"id": e["id"], "result": "[f(a=1)]"} for e in entries]
    res = bfcl.run_bfcl(bfcl.BfclConfig(results=_write_results(tmp_path, rows), output_dir=str(tmp_path / "o")),
                        progress=False)
    assert res["n"] == len(entries) == 3491
    assert res["scoring_seconds"] < 10
    assert res["overall"]["accuracy"] is not None and res["overall"]["signature"]["short"].startswith("agg:bfcl/overall")
    assert set(res["groups"]) == {"non_live", "live", "irrelevance"}


@pytest.mark.parametrize("extra,message", [
    (["--categories", "simple"], "unknown BFCL categories"),
    (["--model", "smollm2-135m-instruct"], "set together with results"),
    (["--limit", "1"], "not in the selected categories"),
])
def test_command_refuses(tmp_path, capsys, extra, message):
    args = ["eval", "bfcl", "--results", _write_results(tmp_path, ROWS), "--output-dir", str(tmp_path / "o"), *extra]
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_duplicate_ids_are_refused(tmp_path, capsys):
    path = _write_results(tmp_path, ROWS[:1] * 2)
    assert main(["eval", "bfcl", "--results", path, "--output-dir", str(tmp_path / "o")]) == 2
    assert "appears twice" in capsys.readouterr().err


def test_function_calling_mode_results_are_refused(tmp_path, capsys):
    path = _write_results(tmp_path, [{"id": "simple_python_0", "result": [{"f": "{}"}]}])
    assert main(["eval", "bfcl", "--results", path, "--output-dir", str(tmp_path / "o")]) == 2
    assert "field 'result'" in capsys.readouterr().err


class _Recording:
    """An engine that reports a smaller context window and records the sampling parameters it is given."""

    def __init__(self, engine, max_context):
        self.inner, self.max_context, self.calls = engine, max_context, []
        self.model, self.tokenizer, self.batch_size = engine.model, engine.tokenizer, engine.batch_size

    def encode(self, prompt):
        return self.inner.encode(prompt)

    def generate(self, prompts, params, apply_chat_template=True, progress=False):
        self.calls.append((len(prompts), params))
        return self.inner.generate(prompts, params, apply_chat_template=apply_chat_template, progress=False)


def test_generation_is_greedy_budgeted_and_signed(tmp_path, tiny_lm):
    from alignkit.generate.engine import HFEngine

    model, tok = tiny_lm
    inner = HFEngine(model, tok, batch_size=2)
    cfg = bfcl.BfclConfig(categories=["simple_python"], limit=3, max_new_tokens=6, output_dir=str(tmp_path / "a"))
    entries, _ = bfcl.select_entries(cfg)
    lengths = [len(inner.encode(bfcl.prompt_messages(e))) for e in entries]
    context = max(lengths) + 2 + 3  # BFCL's budget: min(max_new_tokens, context - prompt - 2)
    engine = _Recording(inner, context)
    res = bfcl.run_bfcl(cfg, engine=engine, progress=False)
    assert all(p.temperature == 0.0 for _, p in engine.calls)
    assert sorted(p.max_new_tokens for _, p in engine.calls) == sorted({min(6, context - n - 2) for n in lengths})
    assert sum(n for n, _ in engine.calls) == 3 and res["no_room_to_answer"] == 0
    again = _Recording(inner, context)  # an interrupted or repeated run reuses the cached answers
    assert bfcl.run_bfcl(cfg, engine=again, progress=False)["categories"] == res["categories"]
    assert again.calls == []
    rows = [json.loads(line) for line in (tmp_path / "a" / "scored.jsonl").read_text().splitlines()]
    assert all(isinstance(r["output"], str) for r in rows)
    sig = res["categories"]["simple_python"]["signature"]["components"]
    assert sig["decoding"]["strategy"] == "greedy" and sig["decoding"]["max_new_tokens"] == 6
    assert sig["model"]["name"] == cfg.model and sig["tokenizer"]["sha256"]

    # a prompt that leaves no room is not generated: scored as an output with no call, as BFCL does
    cramped = _Recording(inner, min(lengths) + 2)
    res = bfcl.run_bfcl(cfg.model_copy(update={"output_dir": str(tmp_path / "b")}), engine=cramped, progress=False)
    assert cramped.calls == [] and res["no_room_to_answer"] == 3
    row = json.loads((tmp_path / "b" / "scored.jsonl").read_text().splitlines()[0])
    assert row["output"] is None and "no room" in row["parse_error"] and not row["valid"]
