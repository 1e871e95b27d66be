"""Reward models: multi-task and length-balanced training on a tiny model, evaluation metrics, rm eval."""

from __future__ import annotations

import json
import math

import pytest
from tests.train.conftest import make_pairs, write_jsonl

from alignkit.train.reward_eval import reward_report, spearman


def test_spearman_hand_values():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ties: ranks x = [1.5, 1.5, 3], y = [1, 2, 3] -> rho = 0.8660...
    assert spearman([5, 5, 7], [1, 2, 3]) == pytest.approx(math.sqrt(3) / 2)
    assert spearman([1, 1], [1, 2]) is None and spearman([1], [2]) is None


def test_reward_report_hand_values():
    chosen, rejected = [2.0, 0.0, 1.0, 3.0], [1.0, 1.0, 1.0, 0.0]
    rep = reward_report(chosen, rejected, [10, 3, 5, 20], [4, 9, 5, 2], edges=(1, 8))
    assert rep["n"] == 4 and rep["accuracy"] == 0.5  # pair 3 is a tie in reward: not a win
    assert rep["by_length_bucket"] == {"0": {"n": 1, "accuracy": 0.0}, "1-7": {"n": 2, "accuracy": 0.5},
                                       "8+": {"n": 1, "accuracy": 1.0}}
    assert rep["accuracy_longer_wins"] == 1.0 and rep["accuracy_shorter_wins"] == 0.0
    assert rep["margin"] == pytest.approx(0.75) and rep["reward_mean"] == pytest.approx(9 / 8)
    rewards = chosen + rejected
    assert rep["reward_std"] == pytest.approx(math.sqrt(sum((r - 9 / 8) ** 2 for r in rewards) / 8))
    assert rep["length_spearman"] == pytest.approx(spearman(rewards, [10, 3, 5, 20, 4, 9, 5, 2]))


def _rm_cfg(tmp_path, model_dir, data, *over):
    from alignkit.config import load_config
    from alignkit.train.reward import RMConfig

    base = [f"model.name_or_path={model_dir}", f"data.train={data}", f"train.output_dir={tmp_path / 'out'}",
            "train.progress=false", "train.report_to=[]", "train.lr=1e-3", "train.max_steps=1"]
    return load_config(RMConfig, None, base + list(over))


def test_multitask_balanced_rm_one_step_and_rm_eval(tmp_path, tiny_model_dir):
    from alignkit.cli import main
    from alignkit.data.length_bias import length_biased_pairs
    from alignkit.train.reward import train_rm

    pairs = write_jsonl(tmp_path / "p.jsonl", length_biased_pairs(16, bias=0.75, seed=0))
    held = write_jsonl(tmp_path / "h.jsonl", length_biased_pairs(6, bias=0.5, seed=1))
    unpaired = write_jsonl(tmp_path / "u.jsonl", [
        {"prompt": [{"role": "user", "content": f"What is {i} + 1?"}],
         "completion": [{"role": "assistant", "content": str(i + 1 + (i % 2))}], "label": i % 2 == 0}
        for i in range(6)])
    cfg = _rm_cfg(tmp_path, tiny_model_dir, pairs, f"data.eval={held}", f"data.unpaired={unpaired}",
                  "data.balance_length=bucket", "data.length_buckets=[1,8]", "unpaired_weight=0.5",
                  "train.batch_size=6", "train.max_steps=2")
    summary = train_rm(cfg)
    bal = summary["balance"]
    assert bal["rows_before"] == 16 and bal["rows_after"] == summary["train_pairs"] < 16
    for b in bal["buckets"].values():
        assert b["kept"] == b["ties"] + 2 * min(b["longer_wins"], b["shorter_wins"])
    assert summary["unpaired"]["kept"] == 6 and math.isfinite(summary["final_loss"])
    logged = [json.loads(x) for x in open(tmp_path / "out" / "metrics.jsonl")]
    assert any("bce/accuracy" in x for x in logged)  # the BCE term ran
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert saved["balance"] == bal and set(saved["eval_after"]) >= {"accuracy", "length_spearman", "by_length_bucket",
                                                                    "reward_mean", "reward_std"}
    # alignkit rm eval on the trained model reproduces the run's held-out figures
    out = tmp_path / "eval.json"
    assert main(["rm", "eval", "--model", str(tmp_path / "out"), "length_buckets=[1,8]", "--data", held,
                 f"output={out}"]) == 0  # flags and overrides in any order
    rep = json.loads(out.read_text())
    assert rep["n"] == 6 and rep["accuracy"] == pytest.approx(saved["eval_after"]["accuracy"])
    assert rep["length_spearman"] == pytest.approx(saved["eval_after"]["length_spearman"], abs=1e-5)


def test_rm_eval_refuses_a_missing_model_flag(capsys):
    from alignkit.cli import main

    assert main(["rm", "eval", "--data", "x.jsonl"]) == 2
    assert "model" in capsys.readouterr().err


def test_unbalanced_is_default_and_unpaired_only_batches(tmp_path, tiny_model_dir):
    from alignkit.train.reward import train_rm

    pairs = write_jsonl(tmp_path / "p.jsonl", make_pairs(2))
    unpaired = write_jsonl(tmp_path / "u.jsonl", [{"prompt": "q", "completion": f"a{i}", "label": bool(i % 2)}
                                                  for i in range(30)])
    # 32 units, batch 4: most micro-batches hold only unpaired rows
    summary = train_rm(_rm_cfg(tmp_path, tiny_model_dir, pairs, f"data.unpaired={unpaired}",
                               "train.batch_size=4", "train.max_steps=2"))
    assert summary["balance"] is None and math.isfinite(summary["final_loss"])
