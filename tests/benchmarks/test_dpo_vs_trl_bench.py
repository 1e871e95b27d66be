"""benchmarks/dpo_vs_trl.py: its data, bookkeeping and one end-to-end run on a tiny random model."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "dpo_vs_trl.py"


def _load(script: Path):
    """Import a benchmark script as a module (its directory on sys.path while it loads, as when run as a script, for ``from common import``)."""
    import sys

    sys.path.insert(0, str(script.parent))
    try:
        spec = importlib.util.spec_from_file_location(script.stem, script)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(script.parent))
    return mod


def _tiny_model_dir(tokenizer, tmp_path: Path) -> Path:
    """A tiny random causal LM with ``tokenizer``, saved as an HF model directory."""
    from alignkit.models import tiny_random_causal_lm

    model, tok = tiny_random_causal_lm(tokenizer)
    model_dir = tmp_path / "tiny"
    model.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    return model_dir


@pytest.fixture(scope="module")
def bench():
    return _load(SCRIPT)


def test_default_pairs_are_deterministic_distinct_and_conversational(bench):
    a, b = bench.default_pairs(24), bench.default_pairs(24)
    assert a == b
    assert len(a) == 24
    for row in a:
        assert row["prompt"][0]["role"] == "user"
        assert row["chosen"][0]["role"] == row["rejected"][0]["role"] == "assistant"
        assert row["chosen"][0]["content"] != row["rejected"][0]["content"]
    # Several lengths, so batches carry padding and some sequences hit max_length.
    assert len({len(r["chosen"][0]["content"].split()) for r in a}) >= 6


def test_step_tokens_counts_real_tokens_capped_at_max_length(bench):
    assert bench.step_tokens([1, 2, 3], [[4, 5], [6]], max_length=10) == 5 + 4
    assert bench.step_tokens([1, 2, 3], [[4] * 20, [6]], max_length=10) == 10 + 4


def _ex(prompt, chosen, rejected, index=0):
    from alignkit.data.tokenize import TokenizedExample

    return TokenizedExample(index, prompt, [chosen, rejected])


def test_boundary_report_classifies_each_completion(bench, tokenizer):
    nl = tokenizer.convert_tokens_to_ids("Ċ")
    eos = tokenizer.eos_token_id
    order = [_ex([1, 2], [10, eos], [11, 12, eos]), _ex([1, 3], [20, 21, 22, 23], [30, eos])]
    trl = {"prompt_ids": [[1, 2], [1, 3]],
           "chosen_ids": [[10, eos, nl], [20, 21, 22, 23, 24, 25]],  # +newline; truncated by the collator
           "rejected_ids": [[11, 12, eos], [30, eos, nl]]}
    rep = bench.boundary_report(tokenizer, order, trl, max_length=6)
    assert rep["same_rows"] is True
    assert rep["identical"] == 1 and rep["truncated_identical"] == 1
    assert rep["trl_extra"] == {repr(["Ċ"]): 2}


def test_boundary_report_detects_a_different_row_order(bench, tokenizer):
    order = [_ex([1, 2], [10], [11]), _ex([1, 3], [20], [21])]
    trl = {"prompt_ids": [[1, 3], [1, 2]], "chosen_ids": [[20], [10]], "rejected_ids": [[21], [11]]}
    rep = bench.boundary_report(tokenizer, order, trl, max_length=64)
    assert rep["same_rows"] is False and "row 0: prompts differ" in rep["detail"]
    short = bench.boundary_report(tokenizer, order[:1], trl, max_length=64)
    assert short["same_rows"] is False and "TRL kept 2 rows" in short["detail"]


@pytest.mark.parametrize("argv", [["--steps", "0"], ["--pairs", "3", "--data", "x.jsonl"], ["--precision", "fp16"]])
def test_bad_arguments_exit_2(bench, argv):
    with pytest.raises(SystemExit) as exc:
        bench.main(argv)
    assert exc.value.code == 2


def test_dpo_loss_and_gradients_equal_trl_dpotrainer(tokenizer, tmp_path):
    """Our DPO objective vs TRL's DPOTrainer.compute_loss on one batch: same ids, same loss, same gradients.

    The reference is a different random model, so the loss is not the trivial ln 2 of step 0.
    """
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    from alignkit.config import load_config
    from alignkit.data.batching import collate
    from alignkit.data.tokenize import TokenizedExample
    from alignkit.models import tiny_random_causal_lm
    from alignkit.train.preference import PreferenceConfig, PreferenceObjective
    from alignkit.train.run import LogpsForward

    policy, tok = tiny_random_causal_lm(tokenizer, seed=0)
    ref_model, _ = tiny_random_causal_lm(tokenizer, seed=1)
    ref_model.requires_grad_(False)
    texts = [("Say alpha.", "alpha", "beta gamma no"), ("Name a word.", "delta epsilon zeta", "eta")]
    rows = [{"prompt_ids": tok(p).input_ids, "chosen_ids": tok(c).input_ids + [tok.eos_token_id],
             "rejected_ids": tok(r).input_ids + [tok.eos_token_id]} for p, c, r in texts]

    # alignkit: the recipe's objective on the recipe's collated batch
    cfg = load_config(PreferenceConfig, None, ["data.train=x.jsonl", "loss.beta=0.1"])
    examples = [TokenizedExample(i, r["prompt_ids"], [r["chosen_ids"], r["rejected_ids"]]) for i, r in enumerate(rows)]
    batch = collate(examples, tok.pad_token_id)
    with torch.no_grad():
        ref_lp, _ = LogpsForward(ref_model)(batch["input_ids"], batch["attention_mask"], batch["loss_mask"])
    batch["ref_logps"] = ref_lp.view(2, -1).transpose(0, 1)
    total, _ = PreferenceObjective(cfg, pairs=True)(LogpsForward(policy), batch)
    ours = total / len(rows)
    ours.backward()
    our_grads = {n: p.grad.clone() for n, p in policy.named_parameters()}
    policy.zero_grad(set_to_none=True)

    # TRL: DPOTrainer.compute_loss on the same token ids (its collator's layout)
    args = DPOConfig(output_dir=str(tmp_path / "trl"), beta=0.1, loss_type=["sigmoid"], use_cpu=True,
                     report_to="none", disable_tqdm=True, activation_checkpointing=False, bf16=False,
                     per_device_train_batch_size=2, max_length=None)
    data = Dataset.from_list([{"prompt": p, "chosen": c, "rejected": r} for p, c, r in texts])
    trainer = DPOTrainer(model=policy, ref_model=ref_model, args=args, train_dataset=data, processing_class=tok)
    inputs = DataCollatorForPreference(pad_token_id=tok.pad_token_id)(rows)
    theirs = trainer.compute_loss(trainer.model, inputs)
    theirs.backward()

    assert abs(ours.item() - math.log(2)) > 1e-3  # a non-trivial loss
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)
    for name, p in policy.named_parameters():
        torch.testing.assert_close(p.grad, our_grads[name], rtol=1e-4, atol=1e-7, msg=name)


@pytest.mark.slow
def test_end_to_end_on_a_tiny_random_model(bench, embedded_tokenizer, tmp_path):
    """Both trainers, same rows and order, step-0 loss ln 2 on both sides, warm cache hit, exit 0."""
    # the embedded tokenizer: --max-length 48 is sized for its tokens (the byte-level tiny one drops every row)
    model_dir = _tiny_model_dir(embedded_tokenizer, tmp_path)
    out = tmp_path / "result.json"
    rc = bench.main(["--model", str(model_dir), "--steps", "2", "--batch-size", "2", "--pairs", "3",
                     "--max-length", "48", "--threads", "1", "--json", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["pass"] is True and res["boundary"]["same_rows"] is True
    cold, trl = res["alignkit_cold"]["steps"], res["trl"]["steps"]
    assert len(cold) == len(trl) == 2
    assert cold[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert trl[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert res["alignkit_cold"]["reference_cache"]["hit"] is False
    assert res["alignkit_warm"]["reference_cache"]["hit"] is True
    assert [s["loss"] for s in res["alignkit_warm"]["steps"]] == [s["loss"] for s in cold]
    # 3 pairs, batch 2, 2 steps: step 1 wraps into a new permutation, so 4 row slots in all.
    assert len(res["tokens"]["trl"]) == 2 and all(t > 0 for t in res["tokens"]["alignkit"])
    assert res["alignkit_cold"]["peak_rss_kb"] > 0 and res["trl"]["peak_rss_kb"] > 0


def test_sft_benchmark_end_to_end_on_a_tiny_random_model(embedded_tokenizer, tmp_path):
    """benchmarks/sft_vs_trl.py (it shares dpo_vs_trl's helpers): same tokens on both sides, equal step-0 loss."""
    sft_bench = _load(SCRIPT.with_name("sft_vs_trl.py"))
    model_dir = _tiny_model_dir(embedded_tokenizer, tmp_path)
    out = tmp_path / "result.json"
    rc = sft_bench.main(["--model", str(model_dir), "--steps", "2", "--batch-size", "2", "--rows", "3",
                         "--max-length", "64", "--threads", "1", "--json", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["pass"] is True and not res["mismatch"]
    ak, trl = res["alignkit"]["steps"], res["trl"]["steps"]
    assert len(ak) == len(trl) == 2 and abs(ak[0]["loss"] - trl[0]["loss"]) < 1e-3
    assert res["alignkit"]["peak_rss_kb"] > 0 and res["trl"]["peak_rss_kb"] > 0


def test_scripts_import_the_shared_helpers_from_common_not_from_each_other():
    """One home for the shared helpers: no script edits sys.path or imports another script."""
    import re

    for script in sorted(SCRIPT.parent.glob("*.py")):
        text = script.read_text()
        assert "sys.path.insert" not in text, script.name
        assert not re.search(r"^\s*from (dpo_vs_trl|sft_vs_trl|profile_core) import", text, re.M), script.name


def test_common_helpers(bench):
    """``best_seconds`` takes the fastest call after a warmup; ``matmul_peak`` is a positive TFLOP/s figure."""
    common = _load(SCRIPT.with_name("common.py"))
    calls = []
    assert common.best_seconds(lambda: calls.append(1), reps=3) >= 0.0 and len(calls) == 4
    assert common.best_seconds(lambda: calls.append(1), reps=2, warmup=False) >= 0.0 and len(calls) == 6
    assert common.matmul_peak("fp32", reps=1) > 0
    assert bench.matmul_peak.__module__ == "common"  # dpo_vs_trl uses the shared one
