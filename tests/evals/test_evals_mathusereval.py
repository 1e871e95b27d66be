"""``alignkit eval mathusereval``: aggregation rules, input errors, and a run against a faulty HTTP judge."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "judge"))
from judge_fakes import FaultServer, critique_answer  # noqa: E402

from alignkit.cli import main  # noqa: E402
from alignkit.evals.mathusereval import summarise  # noqa: E402


def _row(cat, status, score=None, dims=None):
    return {"category": cat, "status": status, "score": score, "dimensions": dims or {}}


def test_summary_means_shares_and_failures_kept_apart():
    rows = [
        _row("Algebra", "scored", 8, {"completeness": 6}),
        _row("Algebra", "scored", 6, {"completeness": 4}),
        _row("Algebra", "failed"),
        _row("Geometry", "scored", 2),
    ]
    s = summarise(rows, official_minus_one=True)
    assert (s["n"], s["scored"], s["parse_failures"]) == (4, 3, 1)
    assert s["micro_mean"] == pytest.approx(16 / 3, abs=1e-3)  # failures never enter the means
    assert s["macro_mean"] == pytest.approx((7 + 2) / 2)
    assert s["share_ge_7"] == pytest.approx(1 / 3, abs=1e-3)
    alg = s["categories"]["Algebra"]
    assert alg["parse_failures"] == 1 and alg["dimensions"]["completeness"] == 5.0
    off = s["official_minus_one"]  # show_result.py: a failure is -1 inside the means
    assert off["micro_mean"] == pytest.approx((8 + 6 - 1 + 2) / 4)
    assert off["macro_mean"] == pytest.approx(((8 + 6 - 1) / 3 + 2) / 2, abs=1e-3)
    assert "official_minus_one" not in summarise(rows)


QUESTIONS = [
    {"question_id": "q1", "category": "Calculate", "question": "What is 6 * 7?",
     "reference": "6 * 7 = 42. The answer is 42.", "answer": "42", "response": "6 * 7 = 42. The answer is 42."},
    {"question_id": "q2", "category": "Calculate", "question": "What is 9 - 4?",
     "reference": "9 - 4 = 5. The answer is 5.", "answer": 5, "response": "The answer is 6."},
    {"question_id": "q3", "category": "Algebra", "question": "Solve x + 2 = 5.",
     "reference": "x = 5 - 2 = 3. The answer is 3.", "response": "NOSCORE x is 3"},
    {"question_id": "q4", "category": "Algebra", "question": "Solve 2x = 8.",
     "reference": "x = 8 / 2 = 4. The answer is 4.", "answer": "4", "response": "x = 4. The answer is 4."},
]


def test_eval_mathusereval_through_the_cli_with_judge_faults(tmp_path, tokenizer):
    from alignkit.models import tiny_random_causal_lm

    model, tok = tiny_random_causal_lm(tokenizer)
    model.save_pretrained(tmp_path / "tiny")
    tok.save_pretrained(tmp_path / "tiny")
    unanswered = {"question_id": "q5", "category": "Algebra", "question": "Solve x - 1 = 1.",
                  "reference": "x = 2. The answer is 2.", "answer": "2"}  # answered by --model
    data = tmp_path / "q.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in [*QUESTIONS, unanswered]))
    out = tmp_path / "run"
    with FaultServer(timeout_sleep=0.5, answer=critique_answer) as server:
        argv = ["eval", "mathusereval", "--data", str(data), "--judge", f"openai:{server.url}#critic",
                "--model", str(tmp_path / "tiny"), "max_new_tokens=6",
                f"output_dir={out}", "judge.timeout=0.3", "judge.backoff_base=0.01", "judge.backoff_max=0.05",
                "judge.max_retries=6", "official_minus_one=true"]
        assert main(argv) == 0
        requests = server.requests
        assert main(argv) == 0  # a rerun is answered from the SQLite cache
        assert server.requests == requests
    res = json.loads((out / "results.json").read_text())
    # the random tiny model's answer to q5 is wrong: the scripted judge gives it 2
    assert (res["n"], res["scored"], res["parse_failures"]) == (5, 4, 1)
    assert res["categories"]["Calculate"]["overall"] == pytest.approx(5.5)  # 9 and 2
    assert res["categories"]["Algebra"]["overall"] == 5.5  # 9 and 2; the unparseable answer is not a score
    assert res["micro_mean"] == pytest.approx(22 / 4)
    assert res["macro_mean"] == pytest.approx(5.5)
    assert res["official_minus_one"]["micro_mean"] == pytest.approx((9 + 2 - 1 + 9 + 2) / 5)
    assert res["exact_answer"] == {"n": 4, "correct": 2, "accuracy": 0.5}
    scored = [json.loads(line) for line in (out / "scored.jsonl").read_text().splitlines()]
    assert scored[4]["answered_by"] == str(tmp_path / "tiny") and scored[4]["finish_reason"] == "length"
    failed = [r for r in scored if r["status"] == "failed"]
    assert [r["id"] for r in failed] == ["q3"] and failed[0]["score"] is None and failed[0]["failure"]


def test_bad_row_names_file_line_field_and_writes_nothing(tmp_path, capsys):
    data = tmp_path / "q.jsonl"
    rows = [QUESTIONS[0], {k: v for k, v in QUESTIONS[1].items() if k != "reference"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    assert main(["eval", "mathusereval", "--data", str(data), "--judge", "openai:http://127.0.0.1:9/v1#x",
                 f"output_dir={out}"]) == 2
    assert f"{data}:2: field 'reference': missing" in capsys.readouterr().err
    assert not out.exists()


def test_issue_spelling_eval_task_mathusereval_runs_like_the_sub_command(tmp_path, capsys):
    """`alignkit eval --task mathusereval --data F --judge openai:...` (the issue's spelling) is `eval mathusereval`."""
    data = tmp_path / "my_questions.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in QUESTIONS))  # every row has a response: no model
    results = {}
    with FaultServer(faults=False, answer=critique_answer) as server:
        for name, spelling in (("task", ["eval", "--task", "mathusereval"]), ("task=", ["eval", "--task=mathusereval"]),
                               ("sub", ["eval", "mathusereval"])):
            out = tmp_path / name
            assert main([*spelling, "--data", str(data), "--judge", f"openai:{server.url}#critic",
                         f"output_dir={out}"]) == 0
            results[name] = json.loads((out / "results.json").read_text())
    capsys.readouterr()
    assert results["task"] == results["task="] == results["sub"]
    res = results["task"]
    assert (res["n"], res["scored"], res["parse_failures"]) == (4, 3, 1)  # q3 (NOSCORE) is a failure, not a score
    assert res["micro_mean"] == pytest.approx((9 + 2 + 9) / 3, abs=1e-3)
    assert res["exact_answer"] == {"n": 3, "correct": 2, "accuracy": 0.6667}
