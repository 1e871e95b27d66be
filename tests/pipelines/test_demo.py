"""What `make demo` runs (`alignkit demo`): every stage end to end, at small settings on a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


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
        f"model={tiny_small_vocab_dir}", f"output_dir={tmp_path / 'demo'}", "n_train=48", "n_heldout=6", "n_heldout_intermediate=3", "k=8",
        "max_new_tokens=48",
        "temperature=1.0", "sft.train.max_steps=1", "min_pairs=1", "sft.train.lr=1e-3", "dpo.train.epochs=1",
        "dpo.train.lr=1e-3", "precision=fp32", "gen_batch=16", "seed=0", "rl.train.max_steps=1", "rl.rollout.prompts_per_step=4", "rl.rollout.n=2",
        "rl.train.lr=1e-3",
    ])
    results = run_demo(settings)
    out = tmp_path / "demo"
    assert json.loads((out / "results.json").read_text())["settings"]["n_train"] == 48
    report = (out / "report.md").read_text()
    assert report.startswith("# alignkit demo report")
    assert (out / "sft" / "model.safetensors").is_file() and (out / "dpo" / "model.safetensors").is_file()
    assert (out / "sft" / "config.yaml").is_file() and (out / "dpo" / "summary.json").is_file()
    dpo_rows = (out / "dpo_pairs.jsonl").read_text().splitlines()
    assert len(dpo_rows) >= 1 and results["sft"]["steps"] == 1 and results["dpo"]["steps"] >= 1
    assert set(results["pass_rate"]) == {"base", "sft", "dpo", "rl"}
    # the headline: the four IFEval accuracies with a 95% interval each; base and final on every held-out
    # prompt, the intermediate models on the first n_heldout_intermediate
    ife = results["ifeval"]
    assert {k: ife[k]["n_prompts"] for k in ife} == {"base": 6, "base_subset": 3, "sft": 3, "dpo": 3, "rl": 6}
    for name, h in ife.items():
        for m in ("prompt_level_strict_acc", "inst_level_strict_acc", "prompt_level_loose_acc", "inst_level_loose_acc"):
            lo, hi = h[m + "_ci95"]
            assert 0.0 <= lo <= h[m] <= hi <= 1.0
        assert name == "base_subset" or h["prompt_level_strict_acc"] == results["pass_rate"][name]
    assert "not the official IFEval set" in report and "| instruction |" in report
    assert results["settings"]["rl"]["reward"]["verifier"] == "ifeval"
    assert (out / "rl" / "model.safetensors").is_file() and results["rl"]["steps"] == 1
    assert len(results["rl"]["train_reward"]) == 1 and "after RL (GRPO, 1 steps)" in report
    assert {"baseline_eval_s", "sft_s", "sampling_s", "dpo_s", "rl_s", "final_eval_s", "total_s"} <= set(
        results["timings_s"])
    assert results["reused_stages"] == []

    # a rerun of the same output_dir reuses every stage and gives the same results
    again = run_demo(settings)
    assert again["reused_stages"] == ["baseline_eval", "sft", "sampling", "dpo", "rl", "final_eval"]
    assert again["pass_rate"] == results["pass_rate"] and again["rl"] == results["rl"]
    # a changed DPO setting runs DPO and everything after it again; SFT and the pairs are reused
    changed = run_demo(settings.model_copy(update={"dpo": settings.dpo.model_copy(update={"nll_weight": 0.0})}))
    assert changed["reused_stages"] == ["baseline_eval", "sft", "sampling"]


def test_demo_without_rl_stage(tmp_path, tiny_small_vocab_dir):
    from alignkit.config import load_config
    from alignkit.pipelines.demo import DemoConfig, run_demo

    settings = load_config(DemoConfig, None, [
        f"model={tiny_small_vocab_dir}", f"out={tmp_path / 'demo'}", "n_train=48", "n_heldout=4",
        "sft_steps=1", "min_pairs=1", "dpo_epochs=1", "precision=fp32", "rl_steps=0", "temperature=1.0",
    ])  # the old top-level keys
    results = run_demo(settings)
    assert set(results["pass_rate"]) == {"base", "sft", "dpo"} and "rl" not in results
    assert not (tmp_path / "demo" / "rl").exists()


def test_old_demo_keys_set_the_recipe_sections_to_what_they_set_before():
    """The configs/demo.yaml of before the recipe sections (top-level keys) resolves to the same settings
    as today's configs/demo.yaml, and each old key lands on its section key."""
    from alignkit.config import ConfigError, load_config
    from alignkit.pipelines.demo import DemoConfig

    old_yaml = {"model": "smollm2-135m-instruct", "out": "runs/demo", "n_train": 96, "n_heldout": 500, "k": 4,
                "temperature": 0.9, "sft_epochs": 1, "sft_steps": 16, "min_pairs": 8, "sft_lr": 1e-5,
                "dpo_epochs": 2, "dpo_lr": 5e-6, "beta": 0.1, "nll_weight": 0.1, "precision": "auto", "rl_steps": 10,
                "rl_prompts_per_step": 8, "rl_n": 4, "rl_lr": 2e-6, "gen_batch": 64, "seed": 0}
    old, new = DemoConfig.model_validate(old_yaml), load_config(DemoConfig, REPO / "configs" / "demo.yaml")
    assert old.model_copy(update={"precision": None}) == new and old.precision == "auto"

    cfg = load_config(DemoConfig, None, [
        "out=/tmp/x", "sft_lr=1e-3", "sft_steps=0", "sft_epochs=3", "dpo_lr=1e-4", "dpo_epochs=1", "beta=0.3",
        "nll_weight=0", "precision=fp32", "rl_steps=5", "rl_prompts_per_step=2", "rl_n=3", "rl_lr=1e-4"])
    assert cfg.output_dir == "/tmp/x" and cfg.dpo.train.output_dir == "/tmp/x/dpo"
    assert (cfg.sft.train.lr, cfg.sft.train.max_steps, cfg.sft.train.epochs) == (1e-3, None, 3)
    assert (cfg.dpo.train.lr, cfg.dpo.train.epochs, cfg.dpo.loss.beta, cfg.dpo.nll_weight) == (1e-4, 1, 0.3, 0)
    assert {s.train.precision for s in (cfg.sft, cfg.dpo, cfg.rl)} == {"fp32"}
    assert (cfg.rl.train.max_steps, cfg.rl.rollout.prompts_per_step, cfg.rl.rollout.n, cfg.rl.train.lr) == (
        5, 2, 3, 1e-4)
    assert load_config(DemoConfig, None, ["rl_steps=0"]).rl is None
    with pytest.raises(ConfigError, match="out sets output_dir, give one of them"):  # not both spellings
        load_config(DemoConfig, REPO / "configs" / "demo.yaml", ["out=/tmp/y"])


def test_demo_sections_take_dotted_overrides_and_keep_the_demo_settings(tmp_path):
    from alignkit.cli import registry
    from alignkit.commands import resolve

    cfg, _ = resolve(registry()["demo"], ["--config", str(REPO / "configs" / "demo.yaml"), "dpo.loss.beta=0.2",
                                          "rl.rollout.n=8", "seed=7", f"output_dir={tmp_path}"])
    assert cfg.dpo.loss.beta == 0.2 and cfg.rl.rollout.n == 8 and cfg.rl.train.seed == 7
    assert cfg.dpo.train.batch_size == 4 and cfg.dpo.nll_weight == 0.1  # the rest of the demo's DPO settings
    assert cfg.rl.model.name_or_path == str(tmp_path / "dpo") and cfg.rl.data.train == str(tmp_path / "rl_prompts.jsonl")
    bare, _ = resolve(registry()["demo"], ["dpo.loss.beta=0.2"])  # no YAML: the same demo settings
    assert bare.dpo.train.batch_size == 4 and bare.dpo.loss.beta == 0.2
    # the flags README shows (the old spellings are generated aliases)
    flags, _ = resolve(registry()["demo"], ["--out", str(tmp_path), "--sft-steps", "4", "--dpo-epochs", "1"])
    assert (flags.output_dir, flags.sft.train.max_steps, flags.dpo.train.epochs) == (str(tmp_path), 4, 1)
    for bad, message in ((["dpo.train.output_dir=/elsewhere"], "set by the demo"),
                         (["sft.model.name_or_path=other"], "set by the demo"),
                         (["rl=null", "rl_n=3"], "rl is null"),
                         (["precision=fp32", "sft.train.precision=bf16"], "give one of them"),
                         (["rl.train.max_stepz=3"], "unknown key")):
        with pytest.raises(Exception, match=message):
            resolve(registry()["demo"], bad)


def test_demo_help_names_every_stage(capsys):
    from alignkit.cli import main

    assert main(["demo", "--help"]) == 0
    text = capsys.readouterr().out
    assert "GRPO" in text and "DPO" in text and "SFT" in text and "rl.rollout.n" in text
