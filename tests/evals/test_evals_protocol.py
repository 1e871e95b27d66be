"""LongBench protocol pieces: middle truncation at exact boundaries, max lengths, buckets, aggregation, input checks."""

from __future__ import annotations

import json

import pytest

from alignkit.evals.longbench import (
    DataError,
    dataset_score,
    default_max_length,
    find_task_file,
    leaderboard,
    load_jsonl,
    longbench_e_bucket,
    middle_truncate,
)
from alignkit.evals.registry import load_suite


class CharTokenizer:
    """One token per character, plus a BOS id 0 prepended (like Llama's tokenizer)."""

    def __call__(self, text, truncation=False):
        return {"input_ids": [0] + [ord(c) for c in text]}

    def decode(self, ids, skip_special_tokens=False):
        return "".join(
            "<s>" if i == 0 and not skip_special_tokens else ("" if i == 0 else chr(i)) for i in ids
        )


def test_middle_truncation_exact_boundaries():
    tok = CharTokenizer()
    # 9 characters + BOS = 10 tokens: fits max_length 10 exactly, untouched
    assert middle_truncate("abcdefghi", tok, 10) == ("abcdefghi", 10, False)
    # one token over: keep int(9/2)=4 first tokens (BOS + "abc") and the last 4 ("fghi"); BOS skipped
    assert middle_truncate("abcdefghi", tok, 9) == ("abcfghi", 10, True)
    # odd max_length keeps 2*int(m/2) tokens, like pred.py
    out, n, cut = middle_truncate("abcdefghijklmnop", tok, 7)
    assert (out, n, cut) == ("abnop", 17, True)


def test_middle_truncation_with_the_real_tokenizer(tokenizer):
    words = " ".join(f"w{i}" for i in range(400))
    ids = tokenizer(words)["input_ids"]
    n = len(ids)
    assert middle_truncate(words, tokenizer, n) == (words, n, False)
    out, before, cut = middle_truncate(words, tokenizer, n - 1)
    half = (n - 1) // 2
    expected = tokenizer.decode(ids[:half], skip_special_tokens=True) + tokenizer.decode(
        ids[-half:], skip_special_tokens=True
    )
    assert cut and before == n and out == expected
    assert out.startswith("w0 w1") and out.endswith("w398 w399")
    assert abs(len(tokenizer(out)["input_ids"]) - 2 * half) <= 2  # re-encoding may merge at the seam


def test_default_max_length_matches_model2maxlen():
    assert [default_max_length(c) for c in (4096, 8192, 16384, 32768)] == [3500, 7500, 15500, 31500]
    with pytest.raises(ValueError):
        default_max_length(1024)


def test_scores_and_buckets():
    assert dataset_score([1.0, 0.5, 0.0]) == 50.0
    assert dataset_score([1 / 3]) == 33.33
    assert dataset_score([]) is None
    assert [longbench_e_bucket(x) for x in (0, 3999, 4000, 7999, 8000, 20000)] == [
        "0-4k", "0-4k", "4-8k", "4-8k", "8k+", "8k+",
    ]  # fmt: skip


def test_leaderboard_reproduces_readme_average():
    # ChatGLM3-6B-32k EN row of the LongBench README: mean of the 6 category scores = 48.5
    tasks = load_suite("longbench")
    cat_scores = {
        "Single-Doc QA": 40.3, "Multi-Doc QA": 46.6, "Summarization": 29.5,
        "Few-shot Learning": 68.1, "Code Completion": 56.2, "Synthetic Tasks": 50.5,
    }  # fmt: skip
    scores = {n: cat_scores[t.category] for n, t in tasks.items() if t.language in ("en", "code")}
    board = leaderboard(scores, tasks)
    assert board["en"]["avg"] == pytest.approx(48.53, abs=0.01)
    assert board["en"]["categories"]["Code Completion"]["members"] == ["lcc", "repobench-p"]
    assert "zh" not in board  # no Chinese scores: no Chinese table


def test_partial_leaderboard_reports_no_average():
    tasks = load_suite("longbench")
    board = leaderboard({"hotpotqa": 50.0, "musique": 30.0}, tasks)
    assert board["en"]["categories"]["Multi-Doc QA"]["score"] == 40.0
    assert board["en"]["avg"] is None
    assert "Summarization" in board["en"]["missing_categories"]


def _row(**kw):
    base = {"input": "q", "context": "c", "answers": ["a"], "length": 10, "all_classes": None, "_id": "x"}
    base.update(kw)
    return json.dumps(base)


def test_load_jsonl_names_file_line_and_field(tmp_path):
    p = tmp_path / "hotpotqa.jsonl"
    p.write_text(_row() + "\n" + _row(answers="a") + "\n")
    with pytest.raises(DataError, match=r"hotpotqa\.jsonl:2: field 'answers': expected list, got str"):
        load_jsonl(p)
    p.write_text(_row() + "\n{not json\n")
    with pytest.raises(DataError, match=r"hotpotqa\.jsonl:2: invalid JSON"):
        load_jsonl(p)
    p.write_text(json.dumps({"input": "q", "context": "c", "answers": ["a"]}) + "\n")
    with pytest.raises(DataError, match=r":1: field 'length': missing"):
        load_jsonl(p)
    p.write_text(_row(all_classes=[1, 2]) + "\n")
    with pytest.raises(DataError, match="all_classes"):
        load_jsonl(p)
    p.write_text(_row() + "\n\n" + _row(_id="y") + "\n")
    assert [r["_id"] for r in load_jsonl(p)] == ["x", "y"]


def test_find_task_file_accepts_data_zip_layout(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "trec_e.jsonl").write_text(_row() + "\n")
    assert find_task_file(tmp_path, "trec", longbench_e=True).name == "trec_e.jsonl"
    with pytest.raises(FileNotFoundError, match="no trec.jsonl"):
        find_task_file(tmp_path, "trec", longbench_e=False)
