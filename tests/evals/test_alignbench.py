"""``alignkit eval alignbench``: official-format judgment parsing (ours and the official one), the judge prompt,
show_result aggregation on a hand-computed set, the official_minus_one label, input errors, and an end-to-end
CLI run against a fake HTTP judge that returns official-format, malformed and failed judgments."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "judge"))
from judge_fakes import FaultServer  # noqa: E402

from alignkit.cli import main  # noqa: E402
from alignkit.evals.alignbench import (  # noqa: E402
    DIMENSION_DEFINITIONS,
    GROUPS,
    QUESTION_TYPES,
    TYPE_DIMENSIONS,
    judge_prompt,
    parse_judgment,
    parse_official,
    summarise,
)
from alignkit.judge.client import ParseError  # noqa: E402

OFFICIAL = "分析：助手的答案与参考答案一致。\n{'事实正确性': 9, '满足用户需求': 6, '清晰度': 7, '完备性': 7, '综合得分': 7}"


# ----------------------------------------------------------------------------------- parsing
def test_official_format_judgment_parses_the_same_both_ways():
    j = parse_judgment(OFFICIAL)
    assert j.score == 7.0 and j.dimensions == {"事实正确性": 9, "满足用户需求": 6, "清晰度": 7, "完备性": 7}
    rating, score = parse_official(OFFICIAL)
    assert score == 7.0 and rating == {**j.dimensions, "综合得分": 7}


@pytest.mark.parametrize(
    ("reply", "ours", "official"),
    [
        # the last block counts, not the prompt's example echoed earlier
        ("例如 {'综合得分': 2}。\n我的打分：{'事实正确性': 9, '综合得分': 9}", 9.0, 9.0),
        # double quotes: ours reads them, the official key-value pattern does not (-1)
        ('{"事实正确性": 8, "满足用户需求": 8, "综合得分": 8}', 8.0, -1.0),
        # no space after the colon: the official patterns need exactly one
        ("{'事实正确性': 6, '综合得分':6}", 6.0, -1.0),
        # a block over two lines: the official block must sit on one line, its fallback finds the score
        ("{'事实正确性': 5,\n'综合得分': 4}", 4.0, 4.0),
        # no block at all, the score written inline: both fall back to the whole reply
        ("总的来说，'综合得分': 3。", 3.0, 3.0),
        # a fractional score: the official \d+ reads 7, ours refuses a non-integer
        ("{'事实正确性': 8, '综合得分': 7.5}", None, 7.0),
        # out of the 1-10 scale: official keeps it, ours refuses
        ("{'事实正确性': 8, '综合得分': 11}", None, 11.0),
        # no score anywhere
        ("回答很好，我不打分。", None, -1.0),
        ("", None, -1.0),
        # a dimension score out of range makes the whole reply unparseable for us
        ("{'事实正确性': 0, '综合得分': 5}", None, 5.0),
    ],
)
def test_parsing_ours_and_official(reply, ours, official):
    if ours is None:
        with pytest.raises(ParseError):
            parse_judgment(reply)
    else:
        assert parse_judgment(reply).score == ours
    assert parse_official(reply)[1] == official


def test_official_block_spans_from_the_first_brace_of_the_last_line():
    # two dicts on the last line: the official block runs from the first '{' of that line, so it reads both
    rating, score = parse_official("打分如下 {'清晰度': 1} 以及 {'事实正确性': 6, '综合得分': 5}")
    assert rating == {"清晰度": 1, "事实正确性": 6, "综合得分": 5} and score == 5.0
    j = parse_judgment("打分如下 {'清晰度': 1} 以及 {'事实正确性': 6, '综合得分': 5}")
    assert j.dimensions == {"事实正确性": 6} and j.score == 5.0  # ours: the last block only


# ----------------------------------------------------------------------------------- prompt
def _listed_dims(prompt: str) -> list[str]:
    """The dimension names of the prompt's numbered dimension list (between the intro and the procedure)."""
    section = prompt[prompt.index("几个维度评价：\n"):prompt.index("\n我们会提供")]
    return re.findall(r"^\d\. (\S+?)：", section, re.M)


def test_prompt_names_the_category_and_the_dimensions_of_the_question_type():
    p = judge_prompt("逻辑推理", "推理", "Q?", "REF", "ANS")
    assert _listed_dims(p) == ["事实正确性", "满足用户需求", "逻辑连贯性", "完备性"]
    assert "逻辑推理" in p and "参考答案可以得 8 分" in p and "'综合得分'" in p
    assert "[参考答案开始]\nREF\n[参考答案结束]\n[助手的答案开始]\nANS\n[助手的答案结束]" in p
    advice = judge_prompt("综合问答", "寻求建议", "Q?", "R", "A")
    assert _listed_dims(advice) == list(TYPE_DIMENSIONS["建议型回答"])
    assert len(QUESTION_TYPES) == 36 and set(QUESTION_TYPES.values()) == set(TYPE_DIMENSIONS)
    assert {d for ds in TYPE_DIMENSIONS.values() for d in ds} == set(DIMENSION_DEFINITIONS)


# ----------------------------------------------------------------------------------- aggregation
def _row(cat, score=None, dims=None, official=None, sub="初等数学"):
    ok = score is not None
    return {"category": cat, "question_type": QUESTION_TYPES[sub], "status": "scored" if ok else "failed",
            "score": score, "dimensions": dims or {}, "failure": None if ok else "unparseable after 1 attempts: x",
            "official_score": official if official is not None else (score if ok else -1.0),
            "official_rating": {"综合得分": score} if ok else {}}


def test_show_result_aggregation_on_a_hand_computed_set():
    rows = [
        _row("数学计算", 8, {"事实正确性": 8, "逻辑连贯性": 6}), _row("数学计算", 6, {"事实正确性": 4}),
        _row("数学计算"),  # a failure: reported, never averaged
        _row("逻辑推理", 4, sub="推理"), _row("逻辑推理", 4, sub="推理"),
        _row("基本任务", 9, {"清晰度": 9, "创造性": 1}, sub="常识知识"), _row("基本任务", 7, sub="常识知识"),
        _row("角色扮演", 6, sub="功能类"), _row("角色扮演", 6, sub="功能类"),
        _row("Custom", 1, sub="其他"),  # not an AlignBench category: reported alone, in no group
    ]
    s = summarise(rows, official_minus_one=True)
    assert (s["n"], s["scored"], s["failures"]) == (10, 9, 1)
    assert s["categories"]["数学计算"] == {"n": 3, "scored": 2, "failures": 1, "mean": 7.0,
                                        "dimensions": {"事实正确性": 6.0, "逻辑连贯性": 6.0}}
    assert s["groups"] == {"中文推理": 5.5, "中文语言": 7.0}  # mean(7, 4); mean(8, 6) over the present categories
    assert s["overall"] == 6.25
    # var = (1/4)^2 * (2/2) [数学计算] + (1/4)^2 * (2/2) [基本任务]; half width 1.96 * sqrt(1/8)
    assert s["overall_interval"]["ci95"] == pytest.approx([6.25 - 0.69296, 6.25 + 0.69296], abs=1e-4)
    # 创造性 is not rated for a 事实与解释型 question: it never enters the means
    assert s["dimensions"] == {"事实正确性": 6.0, "逻辑连贯性": 6.0, "清晰度": 9.0}
    assert s["missing_categories"] == sorted(set(GROUPS["中文语言"]) - {"基本任务", "角色扮演"})
    assert s["ungrouped_categories"] == ["Custom"] and s["failure_reasons"] == {"unparseable after 1 attempts": 1}
    off = s["official_minus_one"]  # show_result.py: -1 averaged like a score
    assert off["minus_ones"] == 1 and off["categories"]["数学计算"] == pytest.approx(13 / 3, abs=1e-4)
    assert off["groups"]["中文推理"] == pytest.approx((13 / 3 + 4) / 2, abs=1e-4)
    assert off["overall"] == pytest.approx(((13 / 3 + 4) / 2 + 7) / 2, abs=1e-4)
    assert "official_minus_one" not in summarise(rows)


def test_no_overall_without_both_groups():
    s = summarise([_row("数学计算", 8), _row("数学计算", 6)])
    assert s["groups"] == {"中文推理": 7.0, "中文语言": None} and s["overall"] is None
    assert s["overall_interval"]["ci95"] is None and s["micro_mean"] == 7.0


# ----------------------------------------------------------------------------------- end to end
def _between(text, start, end):
    i = text.index(start) + len(start)
    return text[i:text.index(end, i)]


def fake_alignbench_judge(prompt: str) -> str:
    """Answers our AlignBench prompt: every listed dimension and the overall get N when the answer says SCORE=N
    (5 otherwise); DQUOTE: a double-quoted dict; NOSCORE: no dict; CRASH: the server drops the connection."""
    answer = _between(prompt, "[助手的答案开始]\n", "\n[助手的答案结束]")
    if "CRASH" in answer:
        raise ConnectionAbortedError("scripted judge crash")
    dims = _listed_dims(prompt)
    m = re.search(r"SCORE=(\d+)", answer)
    n = int(m.group(1)) if m else 5
    if "NOSCORE" in answer:
        return "这个回答难以评价。"
    if "DQUOTE" in answer:
        return "分析。\n{" + ", ".join(f'"{d}": {n}' for d in [*dims, "综合得分"]) + "}"
    scores = ", ".join(f"'{d}': {n}" for d in dims)
    return f"与参考答案相比，回答有不足。\n{{{scores}, '综合得分': {n}}}"


QUESTIONS = [
    (1, "数学计算", "初等数学", "3 + 4 = ?", "7", "3 + 4 = 7. SCORE=8"),
    (2, "数学计算", "应用数学", "一个苹果 2 元，买 3 个多少钱？", "6 元", "6 元 SCORE=6"),
    (3, "逻辑推理", "推理", "All cats are animals; Tom is a cat. Is Tom an animal?", "Yes.", "Yes. SCORE=4"),
    (4, "逻辑推理", "证明", "证明：两个偶数之和是偶数。", "2a + 2b = 2(a+b)。", "NOSCORE"),
    (5, "基本任务", "翻译", "Translate 你好 into English.", "Hello.", "Hello. SCORE=9"),
    (6, "中文理解", "字词理解", "“画蛇添足”是什么意思？", "比喻做多余的事。", "多此一举。DQUOTE SCORE=7"),
    (7, "综合问答", "寻求建议", "How do I sleep better?", "Keep a schedule.", "Keep regular hours. SCORE=6"),
    (8, "文本写作", "创意文体写作", "写一首关于秋天的短诗。", "秋风起，落叶黄。", "秋叶落。SCORE=7"),
    (9, "角色扮演", "功能类", "Act as a tour guide of Beijing.", "Welcome to Beijing!", "CRASH"),
    (10, "专业能力", "物理", "光速约为多少？", "约 3×10^8 m/s。", "3×10^8 m/s SCORE=8"),
]


def _write(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def test_eval_alignbench_through_the_cli_with_a_fake_judge(tmp_path, tokenizer, capsys):
    from alignkit.models import tiny_random_causal_lm

    model, tok = tiny_random_causal_lm(tokenizer)
    model.save_pretrained(tmp_path / "tiny")
    tok.save_pretrained(tmp_path / "tiny")
    rows = [dict(zip(("question_id", "category", "subcategory", "question", "reference", "answer"), q, strict=True))
            for q in QUESTIONS]
    rows.append({"question_id": 11, "category": "角色扮演", "subcategory": "现实生活类", "question": "扮演一位老师。",
                 "reference": "同学们好！", "answer": None})  # answered by --model (the judge gives it 5)
    data = tmp_path / "alignbench.jsonl"
    _write(data, rows)
    out = tmp_path / "run"
    with FaultServer(timeout_sleep=0.5, answer=fake_alignbench_judge) as server:
        assert main(["eval", "alignbench", "--data", str(data), "--judge", f"openai:{server.url}#gpt-4",
                     "--model", str(tmp_path / "tiny"), "max_new_tokens=6", f"output_dir={out}",
                     "judge.timeout=0.3", "judge.backoff_base=0.01", "judge.backoff_max=0.05",
                     "judge.max_retries=3", "official_minus_one=true"]) == 0
    stdout = capsys.readouterr().out
    printed = json.loads(stdout[stdout.index("{\n"):])  # after the progress lines
    res = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert printed["overall"] == res["overall"]
    assert (res["n"], res["scored"], res["failures"]) == (11, 9, 2)  # NOSCORE and CRASH
    assert set(res["failure_reasons"]) == {"unparseable after 1 attempts", "call failed"}
    cats = res["categories"]
    assert cats["数学计算"]["mean"] == 7.0 and cats["逻辑推理"] == {
        "n": 2, "scored": 1, "failures": 1, "mean": 4.0,
        "dimensions": {"事实正确性": 4.0, "满足用户需求": 4.0, "逻辑连贯性": 4.0, "完备性": 4.0}}
    assert cats["中文理解"]["mean"] == 7.0  # double quotes parse for us
    assert cats["角色扮演"]["mean"] == 5.0  # the model's answer; the crashed judgment is not a score
    assert res["groups"]["中文推理"] == 5.5
    assert res["groups"]["中文语言"] == pytest.approx((9 + 7 + 6 + 7 + 5 + 8) / 6, abs=1e-4)
    assert res["overall"] == pytest.approx((5.5 + 7) / 2, abs=1e-4) and res["missing_categories"] == []
    assert res["overall_interval"]["ci95"] is None  # single-question categories: no variance estimate
    assert res["dimensions"]["丰富度"] == pytest.approx((9 + 7 + 5) / 3, abs=1e-4)  # 生成型 questions only
    off = res["official_minus_one"]  # NOSCORE, CRASH and the double-quoted reply are -1
    assert off["minus_ones"] == 3 and off["categories"]["中文理解"] == -1.0 and off["categories"]["逻辑推理"] == 1.5
    sig = res["signature"]["components"]
    assert sig["protocol"]["judge"] == "openai:gpt-4" and sig["protocol"]["name"].startswith("alignbench")
    assert sig["decoding"]["strategy"] == "official" and sig["decoding"]["temperatures"] == {"角色扮演": 0.7}
    assert sig["model"]["name"] == str(tmp_path / "tiny") and "given_answers_sha256" in sig["model"]
    judged = [json.loads(line) for line in (out / "judgments.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [j["question_id"] for j in judged] == list(range(1, 12))
    by_id = {j["question_id"]: j for j in judged}
    assert by_id[4]["status"] == "failed" and by_id[4]["score"] is None and by_id[4]["judgment"] == "这个回答难以评价。"
    assert by_id[9]["failure"].startswith("call failed") and by_id[9]["official_score"] == -1.0
    assert by_id[6]["score"] == 7.0 and by_id[6]["official_score"] == -1.0 and by_id[6]["official_rating"] == {}
    assert by_id[1]["rated_dimensions"] == list(TYPE_DIMENSIONS["逻辑推理型回答"])
    assert by_id[1]["dimensions"] == dict.fromkeys(TYPE_DIMENSIONS["逻辑推理型回答"], 8)
    answers = [json.loads(line) for line in (out / "answers.jsonl").read_text(encoding="utf-8").splitlines()]
    assert answers[10]["answered_by"] == str(tmp_path / "tiny") and answers[10]["temperature"] == 0.7


def test_answers_in_file_run_without_a_model_and_rerun_from_the_cache(tmp_path, capsys):
    rows = [dict(zip(("question_id", "category", "subcategory", "question", "reference", "answer"), q, strict=True))
            for q in QUESTIONS if q[-1] not in ("CRASH", "NOSCORE")]
    data = tmp_path / "answers.jsonl"
    _write(data, rows)
    out = tmp_path / "run"
    with FaultServer(faults=False, answer=fake_alignbench_judge) as server:
        argv = ["eval", "alignbench", "--data", str(data), "--judge", f"openai:{server.url}#judge", f"output_dir={out}"]
        assert main(argv) == 0
        first = json.loads((out / "results.json").read_text(encoding="utf-8"))
        requests = server.requests
        assert main(argv) == 0
        assert server.requests == requests  # every judgment answered from the SQLite cache
    capsys.readouterr()
    assert (first["n"], first["failures"]) == (8, 0) and "official_minus_one" not in first
    assert first["signature"]["components"]["model"]["name"] == "answers-in-file"


def test_input_errors_name_the_row_and_write_nothing(tmp_path, capsys):
    base = {"question_id": 1, "category": "数学计算", "subcategory": "初等数学", "question": "1+1?", "reference": "2"}
    out = tmp_path / "run"
    cases = [
        ([{**base, "answer": "2"}, {**base, "question_id": 2, "subcategory": "魔法", "answer": "x"}],
         "field 'subcategory': '魔法' is not an AlignBench subcategory"),
        ([{**base, "answer": "2"}, {**base, "answer": "3"}], "field 'question_id': duplicate id 1"),
        ([{**base, "answer": "2"}, {**base, "question_id": 2}], "1 of 2 questions have no 'answer'"),
    ]
    for rows, message in cases:
        data = tmp_path / "q.jsonl"
        _write(data, rows)
        assert main(["eval", "alignbench", "--data", str(data), "--judge", "openai:http://127.0.0.1:9/v1#x",
                     f"output_dir={out}"]) == 2
        assert message in capsys.readouterr().err
        assert not out.exists()
