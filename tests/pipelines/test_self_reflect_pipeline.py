"""``alignkit pipeline self-reflect``: stages over a fake judge on real HTTP with injected faults.

The fake annotator answers every question with "The answer is 4." (a quarter of them garbled so the
checker cannot give a verdict), the fake checker compares with the standard answer, the fake reviser
writes the hinted answer. Checker failures must be dropped and counted, never taken as a verdict.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from judge_fakes import FaultServer, critique_answer

from alignkit.cli import main
from alignkit.config import load_config
from alignkit.judge.client import ParseError
from alignkit.pipelines.self_reflect import SelfReflectConfig, expected_verdict, parse_revision, parse_verdict

REPO = Path(__file__).resolve().parents[2]


def test_parsers():
    assert parse_verdict("1") is True and parse_verdict(" 0.\n") is False
    for bad in ("", "10", "yes", "1 because the answer matches"):
        with pytest.raises(ParseError):
            parse_verdict(bad)
    assert parse_revision("Reflection: x\nCorrect solution: 2 + 2 = 4.\nThe answer is 4.") == \
        "2 + 2 = 4.\nThe answer is 4."
    assert parse_revision("反思：略\n正确解答：答案是 4。") == "答案是 4。"
    with pytest.raises(ParseError):
        parse_revision("Reflection: only a reflection")
    with pytest.raises(ParseError):
        expected_verdict({"yes": -0.1})
    assert expected_verdict({"1": -2.0, " 0": -0.5}) is False


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_self_reflect_stages_with_a_faulty_http_judge(tmp_path, tiny_policy_dir):
    with FaultServer(timeout_sleep=0.5, answer=critique_answer) as server:
        judge = {"spec": f"openai:{server.url}#fake", "timeout": 0.3, "backoff_base": 0.01, "backoff_max": 0.05,
                 "max_retries": 6, "concurrency": 4}
        cfg = {"output_dir": str(tmp_path / "run"), "questions": {"train": 12, "heldout": 1, "level": 1},
               "annotator": {"judge": judge}, "checker": {"kind": "judge", "judge": judge, "attempts": 3},
               "classifier": {"model": tiny_policy_dir}}
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump(cfg))
        assert main(["pipeline", "self-reflect", "--config", str(path)]) == 0
        requests = server.requests
        assert main(["pipeline", "self-reflect", "--config", str(path)]) == 0
        assert server.requests == requests  # every stage reused, no call repeated
    run = tmp_path / "run"
    checked, rechecked = _read(run / "check.jsonl"), _read(run / "recheck.jsonl")
    garbled = [r for r in checked if r["solution"].startswith("NOSCORE")]
    assert garbled, "the fake should garble some solutions"
    for r in checked:  # a garbled solution is a recorded failure, never a verdict
        assert (r["check_verdict"] == "failed") == (r in garbled)
        assert (r["check_failure"] is not None) == (r in garbled)
    fours = [r for r in checked if r["answer"] == "4" and r not in garbled]
    assert {r["prompt_id"] for r in checked if r["check_verdict"] == "correct"} == {r["prompt_id"] for r in fours}
    wrong = [r for r in checked if r["check_verdict"] == "incorrect"]
    assert len(rechecked) == len(wrong) and all(r["recheck_verdict"] == "correct" for r in rechecked)
    res = json.loads((run / "results.json").read_text())
    c = res["counts"]
    assert c["check"] == {"correct": len(fours), "incorrect": len(wrong), "failed": len(garbled)}
    assert c["kept_after_recheck"]["measured_correct"] == len(wrong)  # the fake reviser writes the hint
    rows = _read(run / "sft_rows.jsonl")
    assert all(r["classifier_score"] > 0 for r in rows)
    assert len(rows) == len(fours) + len(wrong) - c["classifier_dropped"]
    assert {r["source"] for r in rows} <= {"cot", "revised"}
    assert not {r["id"] for r in rows} & {r["prompt_id"] for r in garbled}
    assert "failed (dropped, never scored)" in (run / "report.md").read_text()


def test_shipped_config_loads():
    cfg = load_config(SelfReflectConfig, REPO / "configs" / "self_reflect_smollm2.yaml")
    assert cfg.checker.force_format == "expected" and cfg.classifier.model is None


@pytest.mark.slow
def test_self_reflect_on_the_embedded_model(tmp_path):
    out = tmp_path / "run"
    argv = ["pipeline", "self-reflect", "--config", str(REPO / "configs" / "self_reflect_smollm2.yaml"),
            f"output_dir={out}", "questions.train=4", "annotator.cot_max_tokens=48", "annotator.revise_max_tokens=48"]
    assert main(argv) == 0
    c = json.loads((out / "results.json").read_text())["counts"]
    assert c["questions"] == 4 and sum(c["check"].values()) + c["cot"]["failed"] == 4
