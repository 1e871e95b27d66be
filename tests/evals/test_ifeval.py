"""``alignkit eval ifeval``: every instruction type on hand-written responses (strict vs loose), argument
refusals, the metrics on a hand-computed set, and the command end to end (given and generated answers)."""

from __future__ import annotations

import json

import pytest

from alignkit.errors import DataError
from alignkit.evals.ifeval.checkers import INSTRUCTIONS, InstructionError, build_check
from alignkit.evals.ifeval.run import IfEvalConfig, run_ifeval
from alignkit.evals.ifeval.scoring import (
    IfEvalRow,
    follow_loose,
    follow_strict,
    loose_variants,
    score_row,
    summarise,
)

# (id, kwargs, response, strict, loose)
CASES = [
    ("keywords:existence", {"keywords": ["sea", "sky"]}, "The SEA meets the sky.", True, True),
    ("keywords:existence", {"keywords": ["sea", "sky"]}, "The sea only.", False, False),
    ("keywords:frequency", {"keyword": "sea", "frequency": 2, "relation": "at least"}, "sea, Sea", True, True),
    ("keywords:frequency", {"keyword": "sea", "frequency": 2, "relation": "less than"}, "sea, Sea", False, False),
    ("keywords:forbidden_words", {"forbidden_words": ["cat"]}, "Concatenate the cats.", True, True),
    ("keywords:forbidden_words", {"forbidden_words": ["cat"]}, "A Cat.", False, False),
    ("keywords:letter_frequency", {"letter": "z", "let_frequency": 2, "let_relation": "at least"}, "Zoo zone", True, True),
    ("keywords:letter_frequency", {"letter": "z", "let_frequency": 2, "let_relation": "less than"}, "Zoo zone", False, False),
    ("language:response_language", {"language": "de"}, "Das ist ein kurzer deutscher Satz über das Meer.", True, True),
    ("language:response_language", {"language": "de"}, "This is a short English sentence about the sea.", False, False),
    ("language:response_language", {"language": "de"}, "12345 !!!", True, True),  # undetectable: followed
    ("length_constraints:number_sentences", {"num_sentences": 2, "relation": "less than"}, "Dr. Who is here.", True, True),
    ("length_constraints:number_sentences", {"num_sentences": 2, "relation": "at least"}, "Dr. Who is here.", False, False),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "One\n***\nTwo", True, True),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "One\n***\n\n***\nTwo", False, False),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "Intro *** a\nOne *** Two", False, True),
    ("length_constraints:number_words", {"num_words": 3, "relation": "less than"}, "two words", True, True),
    ("length_constraints:number_words", {"num_words": 3, "relation": "at least"}, "don't stop", True, True),  # 3 \w runs
    ("length_constraints:number_words", {"num_words": 3, "relation": "at least"}, "two words", False, False),
    ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "then"},
     "First.\n\n\"Then, more.", True, True),
    ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 2, "nth_paragraph": 1, "first_word": "first"},
     "\n\nFirst.\n\nThen.", False, True),  # the raw split's first paragraph is empty; loose strips it
    ("detectable_content:number_placeholders", {"num_placeholders": 2}, "[name] lives at [address].", True, True),
    ("detectable_content:number_placeholders", {"num_placeholders": 2}, "[name] only.", False, False),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Hi.\n\np.s. see you", True, True),
    ("detectable_content:postscript", {"postscript_marker": "P.P.S"}, "Hi.\nP.S. see you", False, False),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "* a\n- b", True, True),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "* a\n- b\n* c", False, True),  # last line removed
    ("detectable_format:constrained_response", {}, "Thinking... My answer is no.", True, True),
    ("detectable_format:constrained_response", {}, "My answer is No.", False, False),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "*a* and **b**", True, True),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "*a* and * *", False, False),
    ("detectable_format:multiple_sections", {"section_spliter": "Section", "num_sections": 2},
     "Section 1\nx\nSection 2\ny", True, True),
    ("detectable_format:multiple_sections", {"section_spliter": "Section", "num_sections": 2},
     "SECTION 1\nx\nSECTION 2\ny", False, False),
    ("detectable_format:json_format", {}, "```json\n{\"a\": 1}\n```", True, True),
    ("detectable_format:json_format", {}, "Here it is:\n{\"a\": 1}", False, True),  # first line removed
    ("detectable_format:title", {}, "<<Sea Song>>\nWaves.", True, True),
    ("detectable_format:title", {}, "<< >>\nWaves.", False, False),
    ("combination:two_responses", {}, "Yes.\n******\nNo.", True, True),
    ("combination:two_responses", {}, "Yes.\n******\nYes.", False, False),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Say hi."}, "say HI. Hi!", True, True),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Say hi."}, "Sure. Say hi. Hi!", False, False),
    ("startend:end_checker", {"end_phrase": "Is there anything else?"}, '"Done. Is there anything else?"', True, True),
    ("startend:end_checker", {"end_phrase": "Is there anything else?"}, "Is there anything else?\n(bye)", False, True),
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "at least"}, "NASA and ESA.", True, True),
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "less than"}, "NASA and ESA.", False, False),
    ("change_case:english_capital", {}, "THE SEA IS CALM TODAY AND THE SKY IS BLUE.", True, True),
    ("change_case:english_capital", {}, "The sea is calm.", False, False),
    ("change_case:english_lowercase", {}, "the sea is calm today and the sky is blue.", True, True),
    ("change_case:english_lowercase", {}, "**The** sea is calm.", False, False),
    ("punctuation:no_comma", {}, "No commas here.", True, True),
    ("punctuation:no_comma", {}, "One, two.", False, False),
    ("startend:quotation", {}, ' "Quoted." ', True, True),
    ("startend:quotation", {}, '"', False, False),
]


@pytest.mark.parametrize("iid,kwargs,response,strict,loose", CASES, ids=[f"{c[0]}-{n}" for n, c in enumerate(CASES)])
def test_instruction_on_hand_written_response(iid, kwargs, response, strict, loose):
    check = build_check(iid, kwargs)
    assert follow_strict([check], response) == [strict]
    assert follow_loose([check], response) == [loose]


def test_cases_cover_every_instruction_with_a_pass_and_a_fail():
    assert {c[0] for c in CASES if c[3]} == set(INSTRUCTIONS) == {c[0] for c in CASES if not c[3]}
    assert len(INSTRUCTIONS) == 25


def test_blank_response_follows_nothing():
    check = build_check("punctuation:no_comma", {})
    assert follow_strict([check], "  \n") == [False] and follow_loose([check], "  \n") == [False]


def test_loose_variants_in_the_reference_order():
    assert loose_variants("a*\nb\n*c") == ["a*\nb\n*c", "a\nb\nc", "b\n*c", "a*\nb", "b", "b\nc", "a\nb", "b"]


@pytest.mark.parametrize("iid,kwargs,message", [
    ("keywords:nope", {}, "unknown instruction id"),
    ("length_constraints:number_words", {"num_words": 5}, "missing argument(s) ['relation']"),
    ("length_constraints:number_words", {"num_words": 5, "relation": "at most"}, "relation must be one of"),
    ("length_constraints:number_words", {"num_words": "5", "relation": "at least"}, "expected an integer"),
    ("length_constraints:number_words", {"num_words": -1, "relation": "at least"}, "num_words must be >= 0"),
    ("punctuation:no_comma", {"num_words": 5}, "unexpected argument(s) ['num_words']"),
    ("keywords:letter_frequency", {"letter": "ab", "let_frequency": 1, "let_relation": "at least"}, "one ASCII letter"),
    ("keywords:existence", {"keywords": []}, "keywords must not be empty"),
    ("language:response_language", {"language": "xx"}, "language must be one of"),
    ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 2, "nth_paragraph": 3, "first_word": "a"},
     "nth_paragraph (3) must be <= num_paragraphs (2)"),
    ("combination:repeat_prompt", {"prompt_to_repeat": ""}, "prompt_to_repeat must not be empty"),
    ("keywords:existence", {"keywords": ["f(x"]}, "keyword 'f(x' is not a valid regular expression"),
    ("detectable_format:multiple_sections", {"section_spliter": "(", "num_sections": 1}, "not a valid regular"),
])
def test_arguments_the_reference_would_randomise_are_refused(iid, kwargs, message):
    with pytest.raises(InstructionError, match=None) as err:
        build_check(iid, kwargs)
    assert message in str(err.value)


def test_none_arguments_are_dropped_but_zero_is_kept():
    """HF rows carry every argument name with null; 0 is a value (lm-eval's `if v` would randomise it)."""
    check = build_check("length_constraints:number_words", {"num_words": 0, "relation": "less than", "keywords": None})
    assert follow_strict([check], "any words") == [False]


def _scored(strict: list[bool], loose: list[bool], ids: list[str]) -> dict:
    return {"instruction_id_list": ids, "follow_instruction_list_strict": strict, "follow_instruction_list_loose": loose}


def test_metrics_on_a_hand_computed_set():
    a, b = "punctuation:no_comma", "detectable_format:title"
    res = summarise([_scored([True, False], [True, True], [a, b]),
                     _scored([True], [True], [a]),
                     _scored([False, False, True], [False, True, True], [b, b, a])])
    assert res["prompt_level_strict_acc"] == pytest.approx(1 / 3)
    assert res["inst_level_strict_acc"] == pytest.approx(3 / 6)
    assert res["prompt_level_loose_acc"] == pytest.approx(2 / 3)
    assert res["inst_level_loose_acc"] == pytest.approx(5 / 6)
    assert res["instructions"][a] == {"n": 3, "strict_acc": 1.0, "loose_acc": 1.0}
    assert res["instructions"][b] == {"n": 3, "strict_acc": 0.0, "loose_acc": pytest.approx(2 / 3)}
    assert res["groups"]["detectable_format"]["n"] == 3 and res["groups"]["punctuation"]["n"] == 3
    lo, hi = res["intervals"]["prompt_level_strict_acc"]
    assert lo == pytest.approx(0.0615, abs=1e-4) and hi == pytest.approx(0.7923, abs=1e-4)  # Wilson, n=3, k=1


ROWS = [
    {"key": 1000, "prompt": "Write a short poem. Do not use any commas.", "instruction_id_list": ["punctuation:no_comma"],
     "kwargs": [{"num_words": None, "relation": None}], "response": "Waves roll in\nand out again"},
    {"key": 1001, "prompt": "Answer with JSON and a title.",
     "instruction_id_list": ["detectable_format:json_format", "detectable_format:title"],
     "kwargs": [{}, {}], "response": "Sure:\n{\"title\": \"<<Sea>>\"}"},
]


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_command_scores_given_responses(tmp_path):
    res = run_ifeval(IfEvalConfig(data=_write(tmp_path / "rows.jsonl", ROWS), output_dir=str(tmp_path / "out")),
                     progress=False)
    assert res["prompt_level_strict_acc"] == 0.5 and res["prompt_level_loose_acc"] == 1.0
    assert res["inst_level_strict_acc"] == pytest.approx(2 / 3) and res["inst_level_loose_acc"] == 1.0
    on_disk = json.loads((tmp_path / "out" / "results.json").read_text())
    assert on_disk["signature"]["components"]["metric"]["language_detection"]["seed"] == 0
    comps = on_disk["signature"]["components"]
    assert "decoding" not in comps and on_disk["generation"] is None
    assert comps["model"]["name"] == "responses given in the data"
    scored = [json.loads(line) for line in (tmp_path / "out" / "scored.jsonl").read_text().splitlines()]
    assert list(scored[1]) == ["key", "prompt", "response", "instruction_id_list",
                               "follow_instruction_list_strict", "follow_instruction_list_loose"]
    assert scored[1]["follow_instruction_list_strict"] == [False, True]
    assert scored[1]["follow_instruction_list_loose"] == [True, True]


def test_command_reads_the_hf_datasets_parquet_with_null_kwargs(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{k: v for k, v in r.items() if k != "response"} | {"response": r["response"]} for r in ROWS]
    for r in rows:  # HF's schema: every kwargs dict carries every name, unused ones null
        r["kwargs"] = [{"num_words": None, "relation": None, **{k: v for k, v in kw.items() if v is not None}}
                       for kw in r["kwargs"]]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "train.parquet")
    res = run_ifeval(IfEvalConfig(data=str(tmp_path / "train.parquet"), output_dir=str(tmp_path / "out")),
                     progress=False)
    assert res["n_prompts"] == 2 and res["prompt_level_loose_acc"] == 1.0


@pytest.mark.parametrize("bad,message", [
    ({"kwargs": []}, "field 'kwargs': expected one object per instruction"),
    ({"instruction_id_list": []}, "field 'instruction_id_list': expected a non-empty list"),
    ({"kwargs": [{"num_words": 3}]}, "punctuation:no_comma: unexpected argument(s) ['num_words']"),
    ({"response": 3}, "field 'response': expected a string"),
])
def test_bad_rows_are_refused_with_file_line_and_field(tmp_path, bad, message):
    path = _write(tmp_path / "rows.jsonl", [ROWS[1], ROWS[0] | bad])
    with pytest.raises(DataError) as err:
        run_ifeval(IfEvalConfig(data=path, output_dir=str(tmp_path / "out")), progress=False)
    assert f"rows.jsonl:2: {message}" in str(err.value)


def test_duplicate_keys_are_refused(tmp_path):
    with pytest.raises(DataError, match="duplicate key 1000"):
        run_ifeval(IfEvalConfig(data=_write(tmp_path / "r.jsonl", [ROWS[0], ROWS[0]]), output_dir=str(tmp_path / "o")),
                   progress=False)


def test_rows_without_response_are_answered_greedily_and_recorded(tmp_path, tiny_lm):
    from alignkit.generate.engine import HFEngine

    model, tok = tiny_lm
    engine = HFEngine(model, tok, batch_size=2)
    rows = [{k: v for k, v in r.items() if k != "response"} for r in ROWS] + [ROWS[0] | {"key": 7}]
    cfg = IfEvalConfig(data=_write(tmp_path / "rows.jsonl", rows), output_dir=str(tmp_path / "out"),
                       max_new_tokens=6, dtype="float32")
    res = run_ifeval(cfg, engine=engine, progress=False)
    gen = res["generation"]
    assert gen["generated"] == 2 and gen["decoding"] == {"strategy": "greedy", "temperature": 0.0,
                                                          "max_new_tokens": 6, "min_new_tokens": 0, "stop_strings": []}
    assert gen["apply_chat_template"] is True and gen["backend"] == "HFEngine"
    comps = res["signature"]["components"]
    assert comps["model"]["dtype"] == "float32" and comps["chat_template"]["sha256"]
    assert comps["task"]["n_given_responses"] == 1
    scored = [json.loads(line) for line in (tmp_path / "out" / "scored.jsonl").read_text().splitlines()]
    assert scored[2]["response"] == ROWS[0]["response"]
    again = run_ifeval(cfg.model_copy(update={"output_dir": str(tmp_path / "again")}), engine=engine, progress=False)
    assert [json.loads(line)["response"] for line in (tmp_path / "again" / "scored.jsonl").read_text().splitlines()] \
        == [r["response"] for r in scored]  # greedy: the same answers
    assert again["signature"]["sha256"] == res["signature"]["sha256"]


def test_signature_settings_do_not_depend_on_the_responses(tmp_path):
    """Two systems' answers to the same rows are comparable (same setting hash), not identical (subject)."""
    other = [r | {"response": r["response"] + " More."} for r in ROWS]
    a = run_ifeval(IfEvalConfig(data=_write(tmp_path / "a.jsonl", ROWS), output_dir=str(tmp_path / "a")), progress=False)
    b = run_ifeval(IfEvalConfig(data=_write(tmp_path / "b.jsonl", other), output_dir=str(tmp_path / "b")), progress=False)
    assert a["signature"]["setting_sha256"] == b["signature"]["setting_sha256"]
    assert a["signature"]["sha256"] != b["signature"]["sha256"]
    fewer = run_ifeval(IfEvalConfig(data=_write(tmp_path / "c.jsonl", ROWS[:1]), output_dir=str(tmp_path / "c")),
                       progress=False)
    assert fewer["signature"]["setting_sha256"] != a["signature"]["setting_sha256"]


@pytest.mark.slow
def test_cli_answers_with_the_embedded_model(tmp_path):
    from alignkit.cli import main

    rows = [{k: v for k, v in ROWS[0].items() if k != "response"}]
    code = main(["eval", "ifeval", "--data", _write(tmp_path / "rows.jsonl", rows), "--max-new-tokens", "8",
                 "--dtype", "float32", "--device", "cpu", "--backend", "hf", "-o", str(tmp_path / "out")])
    assert code == 0
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["generation"]["generated"] == 1 and res["signature"]["components"]["model"]["name"]
    assert (tmp_path / "out" / "config.yaml").is_file()


def test_score_row_keeps_the_official_field_names():
    row = IfEvalRow("k", "p", ["punctuation:no_comma"], [{}])
    assert score_row(row, "a, b")["follow_instruction_list_strict"] == [False]


def test_cli_refuses_a_bad_row_in_one_line(tmp_path, capsys):
    from alignkit.cli import main

    path = _write(tmp_path / "rows.jsonl", [ROWS[0] | {"instruction_id_list": ["keywords:nope"]}])
    assert main(["eval", "ifeval", "--data", path, "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "rows.jsonl:1: unknown instruction id 'keywords:nope'" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "results.json").exists()
