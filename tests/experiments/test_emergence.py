"""experiments/emergence.py (claim 8) in --quick mode: the whole frame end to end on a tiny random model."""

from __future__ import annotations

import json

import emergence
import pytest
import study


def test_digit_accuracy_is_right_aligned_per_digit():
    assert emergence.digit_accuracy("918 + 358 = 1276\nThe answer is 1276.", "1276") == 1.0
    assert emergence.digit_accuracy("The answer is 1236.", "1276") == 0.75
    assert emergence.digit_accuracy("The answer is 276.", "1276") == 0.75  # a missing leading digit
    assert emergence.digit_accuracy("no number here", "1276") == 0.0


def test_quick_mode_stops_at_its_budget_then_resumes_to_valid_results(tmp_path, capsys):
    work = tmp_path / "work"
    args = ["--work", str(work), "--quick", "--lock", str(tmp_path / "lock")]
    for _ in range(3):  # train, then step 0, then step 4: one unit per invocation, no results yet
        assert emergence.main([*args, "--budget-s", "0"]) == study.EXIT_BUDGET
    assert not (work / "results").exists()
    assert len(json.loads((work / "journal.json").read_text())["units"]) == 3
    assert emergence.main([*args, "--budget-s", "0"]) == 0  # the last unit, then the results
    obj = study.validate_results(json.loads((work / "results" / "results.json").read_text())).model_dump(by_alias=True)
    assert obj["quick"] and obj["n_heldout"] == 16 and obj["seeds"] == [0]
    assert list(obj["arms"]) == ["step-0", "step-4", "step-8"]
    assert [(c["a"], c["b"]) for c in obj["comparisons"]] == [("step-4", "step-0"), ("step-8", "step-4")]
    assert all(c["mcnemar"] is not None for c in obj["comparisons"])  # exact match is binary
    extra = obj["extra"]
    assert set(extra["heldout_loss"]) == set(obj["arms"]) and extra["exact_match_threshold"]["status"]
    assert extra["heldout_loss"]["step-8"]["mean"] < extra["heldout_loss"]["step-0"]["mean"]  # SFT lowers it
    assert obj["command"].startswith(".venv/bin/python experiments/emergence.py --work")
    assert (work / "results" / "results.png").is_file() and "step-8" in (work / "results" / "results.md").read_text()
    units = json.loads((work / "journal.json").read_text())["units"]
    assert set(units) == {"train/seed0", "eval/seed0/step0", "eval/seed0/step4", "eval/seed0/step8"}
    assert "Quick smoke run (not evidence)" in capsys.readouterr().out
    with pytest.raises(study.StudyError, match="different configuration"):
        emergence.main([*args, "--steps", "4"])


def test_quick_mode_resumes_training_killed_after_a_checkpoint(tmp_path):
    """A run killed after the step-4 checkpoint (journal without the training unit, no step-8 checkpoint)
    continues the SFT run from step 4 and reaches the same results (fp32)."""
    import shutil

    work = tmp_path / "work"
    args = ["--work", str(work), "--quick", "--lock", str(tmp_path / "lock")]
    assert emergence.main(args) == 0
    before = json.loads((work / "results" / "results.json").read_text())
    journal = json.loads((work / "journal.json").read_text())
    for unit in ("train/seed0", "eval/seed0/step8"):
        del journal["units"][unit]
    (work / "journal.json").write_text(json.dumps(journal))
    (step4,) = [d for d in (work / "sft-seed0" / "checkpoints").iterdir() if d.name.endswith("4")]
    (step8,) = [d for d in (work / "sft-seed0" / "checkpoints").iterdir() if d.name.endswith("8")]
    shutil.rmtree(step8)
    shutil.rmtree(work / "exported" / "seed0-step8")
    written = {p.name: p.stat().st_mtime_ns for p in step4.iterdir()}
    assert emergence.main(args) == 0
    assert {p.name: p.stat().st_mtime_ns for p in step4.iterdir()} == written  # resumed, not retrained
    assert step8.is_dir()
    after = json.loads((work / "results" / "results.json").read_text())
    assert after["arms"] == before["arms"]
    for arm, loss in before["extra"]["heldout_loss"].items():
        assert after["extra"]["heldout_loss"][arm]["mean"] == pytest.approx(loss["mean"], rel=1e-6)
