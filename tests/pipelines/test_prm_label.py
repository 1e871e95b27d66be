"""Monte-Carlo step labels on a tiny deterministic policy; bad rows refused with file:line:field."""

from __future__ import annotations

import json

import pytest
from reward_fakes import RuleEngine

from alignkit.config import load_config
from alignkit.errors import DataError
from alignkit.pipelines.prm_label import PRMLabelConfig, label_steps

GOOD = ["7 + 5 = 12", "12 × 3 = 36", "The answer is 36."]
BAD = ["7 + 5 = 13", "13 × 3 = 39", "The answer is 39."]


def _policy(prompt, j):
    """From a prefix holding the slip ("13") every rollout ends at 39; otherwise 3 of 4 reach 36."""
    prefix = prompt[-1]["content"]
    if "13" in prefix:
        return "The answer is 39."
    return "12 × 3 = 36\nThe answer is 36." if j < 3 else "12 × 3 = 35\nThe answer is 35."


def _write(tmp_path, rows):
    p = tmp_path / "in.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(p)


@pytest.mark.parametrize("mode, good_labels", [("hard", [True, True, True]), ("soft", [0.75, 0.75, 1.0])])
def test_mc_labels_from_rollouts(tmp_path, mode, good_labels):
    data = _write(tmp_path, [{"prompt": "Compute (7 + 5) × 3.", "completions": GOOD, "labels": [True] * 3, "answer": "36"},
                             {"prompt": "Compute (7 + 5) × 3.", "completions": BAD, "labels": [True] * 3, "answer": "36"}])
    cfg = load_config(PRMLabelConfig, None, [f"data={data}", f"output_dir={tmp_path / 'out'}", "rollouts=4",
                                             f"mode={mode}", "progress=false"])
    engine = RuleEngine(_policy)
    summary = label_steps(cfg, engine=engine)
    rows = [json.loads(x) for x in (tmp_path / "out" / "stepwise.jsonl").read_text().splitlines()]
    assert rows[0]["mc"] == [0.75, 0.75, 1.0] and rows[1]["mc"] == [0.0, 0.0, 0.0]
    assert rows[0]["labels"] == good_labels and rows[1]["labels"] == ([False] * 3 if mode == "hard" else [0.0] * 3)
    # one request per non-final step prefix, each a user turn plus the reply prefix to continue
    (prompts, params), = engine.calls
    assert params.n == 4 and len(prompts) == 4
    assert prompts[0] == [{"role": "user", "content": "Compute (7 + 5) × 3."},
                          {"role": "assistant", "content": "7 + 5 = 12\n"}]
    assert summary["rollouts"] == 16 and summary["solutions_correct"] == 1
    from alignkit.data.rows import read_rows

    assert len(read_rows(tmp_path / "out" / "stepwise.jsonl", "stepwise")) == 2  # ready for alignkit prm


def test_policy_source_labels_sampled_solutions(tmp_path):
    data = _write(tmp_path, [{"id": "p1", "question": "Compute (7 + 5) × 3.", "answer": "36"}])
    cfg = load_config(PRMLabelConfig, None, [f"data={data}", f"output_dir={tmp_path / 'out'}", "rollouts=4",
                                             "source=policy", "solutions_per_problem=2", "progress=false"])

    def rule(prompt, j):
        if isinstance(prompt, str):  # the solution itself
            return "\n".join(GOOD if j == 0 else BAD)
        return _policy(prompt, j)

    summary = label_steps(cfg, engine=RuleEngine(rule))
    rows = [json.loads(x) for x in (tmp_path / "out" / "stepwise.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["p1#0", "p1#1"] and rows[0]["completions"] == GOOD
    assert "step by step" in rows[0]["prompt"]  # a bare question gets the answer-format instruction
    assert rows[0]["labels"] == [True] * 3 and rows[1]["labels"] == [False] * 3 and summary["solutions"] == 2


@pytest.mark.parametrize("row, where", [
    ({"prompt": "q", "completions": ["a", "b"], "labels": [True], "answer": "1"}, "in.jsonl:2: field 'labels'"),
    ({"prompt": "q", "completions": ["a", ""], "labels": [True, True], "answer": "1"}, r"in.jsonl:2: field 'completions\[1\]'"),
    ({"prompt": "q", "completions": ["a"], "labels": [True]}, "in.jsonl:2: field 'answer'"),
])
def test_bad_rows_refused_before_any_output(tmp_path, row, where):
    good = {"prompt": "q", "completions": ["a"], "labels": [True], "answer": "1"}
    data = _write(tmp_path, [good, row])
    cfg = load_config(PRMLabelConfig, None, [f"data={data}", f"output_dir={tmp_path / 'out'}", "progress=false"])
    with pytest.raises(DataError, match=where):
        label_steps(cfg, engine=RuleEngine(_policy))
    assert not (tmp_path / "out").exists()


def test_unlabelled_rows_are_labelled_through_the_command(tmp_path, tokenizer):
    """Issue 16: `source: rows` takes {prompt, answer, completions} without labels (what it exists to label);
    rows that carry labels are relabelled, their labels kept as given_labels (still validated)."""
    from alignkit.cli import main
    from alignkit.data.rows import read_rows
    from alignkit.models import tiny_random_causal_lm

    model, tok = tiny_random_causal_lm(tokenizer)
    model.save_pretrained(tmp_path / "tiny")
    tok.save_pretrained(tmp_path / "tiny")
    data = _write(tmp_path, [{"prompt": "Compute (7 + 5) × 3.", "completions": GOOD, "answer": "36"},
                             {"prompt": "Compute (7 + 5) × 3.", "completions": BAD, "answer": "36",
                              "labels": [True, False, False]}])
    out = tmp_path / "out"
    assert main(["prm", "label", f"data={data}", f"model={tmp_path / 'tiny'}", f"output_dir={out}", "rollouts=2",
                 "sampling.max_new_tokens=4", "progress=false"]) == 0
    rows = [json.loads(x) for x in (out / "stepwise.jsonl").read_text().splitlines()]
    assert [r["completions"] for r in rows] == [GOOD, BAD]
    # the last step's label is the finished solution's correctness, whatever the random model continues
    assert [r["labels"][-1] for r in rows] == [True, False] and all(len(r["labels"]) == 3 for r in rows)
    assert "given_labels" not in rows[0] and rows[1]["given_labels"] == [True, False, False]
    assert len(read_rows(out / "stepwise.jsonl", "stepwise")) == 2  # ready for alignkit prm
