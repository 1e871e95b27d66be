"""What `make demo` runs (`alignkit demo`): every stage end to end, at small settings on a tiny model."""

from __future__ import annotations

import json

import pytest


@pytest.fixture()
def tiny_small_vocab_dir(tmp_path, tokenizer):
    """A tiny random Llama over the tiny tokenizer: with 510 tokens its samples end (EOS) and vary
    enough that some pass and some fail the verifiers, so the demo has pairs to train on."""
    from alignkit.models import tiny_random_causal_lm

    model, tok = tiny_random_causal_lm(tokenizer)
    model.save_pretrained(tmp_path / "tiny")
    tok.save_pretrained(tmp_path / "tiny")
    return str(tmp_path / "tiny")


def test_demo_runs_every_stage_and_writes_its_report(tmp_path, tiny_small_vocab_dir):
    from alignkit.config import load_config
    from alignkit.pipelines.demo import DemoConfig, run_demo

    settings = load_config(DemoConfig, None, [
        f"model={tiny_small_vocab_dir}", f"out={tmp_path / 'demo'}", "n_train=16", "n_heldout=4", "k=4",
        "temperature=1.0", "sft_steps=1", "min_pairs=1", "sft_lr=1e-3", "dpo_epochs=1", "dpo_lr=1e-3",
        "precision=fp32", "gen_batch=16", "seed=0", "rl_steps=1", "rl_prompts_per_step=4", "rl_n=2", "rl_lr=1e-3",
    ])
    results = run_demo(settings)
    out = tmp_path / "demo"
    assert json.loads((out / "results.json").read_text())["settings"]["n_train"] == 16
    report = (out / "report.md").read_text()
    assert report.startswith("# alignkit demo report")
    assert (out / "sft" / "model.safetensors").is_file() and (out / "dpo" / "model.safetensors").is_file()
    assert (out / "sft" / "config.yaml").is_file() and (out / "dpo" / "summary.json").is_file()
    dpo_rows = (out / "dpo_pairs.jsonl").read_text().splitlines()
    assert len(dpo_rows) >= 1 and results["sft"]["steps"] == 1 and results["dpo"]["steps"] >= 1
    assert set(results["pass_rate"]) == {"base", "sft", "dpo", "rl"}
    assert (out / "rl" / "model.safetensors").is_file() and results["rl"]["steps"] == 1
    assert len(results["rl"]["train_reward"]) == 1 and "after RL (GRPO, 1 steps)" in report
    assert {"baseline_eval_s", "sft_s", "sampling_s", "dpo_s", "rl_s", "final_eval_s", "total_s"} <= set(
        results["timings_s"])


def test_demo_without_rl_stage(tmp_path, tiny_small_vocab_dir):
    from alignkit.config import load_config
    from alignkit.pipelines.demo import DemoConfig, run_demo

    settings = load_config(DemoConfig, None, [
        f"model={tiny_small_vocab_dir}", f"out={tmp_path / 'demo'}", "n_train=16", "n_heldout=4",
        "sft_steps=1", "min_pairs=1", "dpo_epochs=1", "precision=fp32", "rl_steps=0", "temperature=1.0",
    ])
    results = run_demo(settings)
    assert set(results["pass_rate"]) == {"base", "sft", "dpo"} and "rl" not in results
    assert not (tmp_path / "demo" / "rl").exists()
