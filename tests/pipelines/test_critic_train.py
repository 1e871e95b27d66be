"""``alignkit critic train``: critique rows from the verifier, SFT of a tiny model, agreement report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignkit.cli import main
from alignkit.config import ConfigError, load_config
from alignkit.judge.critique import parse_critique
from alignkit.pipelines.critic_train import CriticTrainConfig, agreement

REPO = Path(__file__).resolve().parents[2]


def test_agreement_counts_failures_apart():
    labels = [{"status": "scored", "score": 9}, {"status": "scored", "score": 2}, {"status": "scored", "score": 9},
              {"status": "failed", "score": None}]
    judged = [{"status": "scored", "score": 8}, {"status": "scored", "score": 7}, {"status": "failed", "score": None},
              {"status": "scored", "score": 1}]
    a = agreement(labels, judged, 7)
    assert a == {"n": 4, "compared": 2, "critic_failures": 1, "agreement": 0.5,
                 "mean_score": pytest.approx(16 / 3, abs=1e-3),
                 "by_label": {"correct": {"compared": 1, "agreement": 1.0, "mean_score": 8.0},
                              "wrong": {"compared": 1, "agreement": 0.0, "mean_score": 7.0}}}


def test_critic_train_through_the_cli(tmp_path, tiny_policy_dir):
    out = tmp_path / "run"
    argv = ["critic", "train", "--config", str(REPO / "configs" / "critic_smollm2.yaml"), f"output_dir={out}",
            f"policy={tiny_policy_dir}", "questions.train=3", "questions.heldout=2", "train.max_steps=1",
            "train.progress=false", "evaluation.batch_size=4"]
    assert main(argv) == 0
    rows = [json.loads(x) for x in (out / "critic_sft.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and sorted(r["label"] for r in rows) == [2, 2, 2, 9, 9, 9]
    for r in rows:  # every target ends in a score block the critique parser reads back as the label
        assert parse_critique(r["completion"][0]["content"]).overall == r["label"]
        assert "[Reference answer]" in r["prompt"][0]["content"]
    res = json.loads((out / "results.json").read_text())
    assert set(res["evaluation"]) == {"policy", "critic"}
    assert all(e["n"] == 4 for e in res["evaluation"].values())
    assert all(e["by_label"]["correct"]["compared"] + e["by_label"]["wrong"]["compared"] == e["compared"]
               for e in res["evaluation"].values())
    judged = [json.loads(x) for x in (out / "eval_critic.jsonl").read_text().splitlines()]
    assert sorted(r["label"] for r in judged) == [2, 2, 9, 9]

    # an interrupted training (stage started, not finished) resumes from its checkpoint on a rerun
    stages = json.loads((out / "stages.json").read_text())
    del stages["train"]["fingerprint"]
    (out / "stages.json").write_text(json.dumps(stages))
    (out / "critic_model" / "config.json").unlink()
    metrics = (out / "critic_model" / "metrics.jsonl").read_text()
    assert main(argv) == 0
    assert (out / "critic_model" / "metrics.jsonl").read_text() == metrics  # resumed at step 1 of 1: kept
    assert (out / "critic_model" / "config.json").is_file()
    assert (out / "critic_model" / "config.json").is_file() and "agreement" in (out / "report.md").read_text()


def test_config_refuses_expected_mode_labels():
    with pytest.raises(ConfigError, match="no critique text"):
        load_config(CriticTrainConfig, None, ["labeler.kind=judge", "labeler.critique.force_format=expected"])
