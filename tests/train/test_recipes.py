"""One-step training on a tiny random model, invariants of the loop, resume, NaN guard, cache."""

import json
import math
import os
import signal

import pytest
import torch
from tests.train.conftest import make_kway, make_pairs, make_sft, write_jsonl


def _params(path):
    from safetensors.torch import load_file

    return load_file(os.path.join(path, "model.safetensors"))


def _cfg(kind, tmp_path, model_dir, data, **train):
    from alignkit.config import load_config
    from alignkit.train.preference import PreferenceConfig
    from alignkit.train.reward import RMConfig
    from alignkit.train.sft import SFTConfig

    cls = {"sft": SFTConfig, "rm": RMConfig, "dpo": PreferenceConfig}[kind]
    over = [f"model.name_or_path={model_dir}", f"data.train={data}", f"train.output_dir={tmp_path / 'out'}",
            "train.progress=false", "train.report_to=[]", "train.lr=1e-3", "train.max_grad_norm=null"]
    over += [f"{k}={v}" for k, v in train.items()]
    return load_config(cls, None, over)


def _changed_everywhere(before_dir, after_dir, skip=()):
    from transformers import AutoModelForCausalLM

    before = AutoModelForCausalLM.from_pretrained(before_dir).state_dict()
    after = AutoModelForCausalLM.from_pretrained(after_dir).state_dict()
    unchanged = [k for k in before if not any(s in k for s in skip) and torch.equal(before[k], after[k])]
    return unchanged


@pytest.mark.parametrize("loss", ["dpo", "ipo", "exo_pair", "exo", "dpo_rw"])
def test_one_step_preference_pairs(tmp_path, tiny_model_dir, loss):
    from alignkit.train.preference import train_preference

    data = write_jsonl(tmp_path / "p.jsonl", make_pairs(4))
    cfg = _cfg("dpo", tmp_path, tiny_model_dir, data, **{"train.max_steps": 1, "train.batch_size": 4,
                                                         "loss.type": loss, "nll_weight": 0.1})
    summary = train_preference(cfg)
    assert summary["steps"] == 1 and torch.isfinite(torch.tensor(summary["final_loss"]))
    # every trainable parameter moved (rotary inv_freq is a buffer, not a parameter)
    assert _changed_everywhere(tiny_model_dir, summary["output_dir"]) == []


@pytest.mark.parametrize("loss", ["exo", "dpo_rw"])
def test_one_step_kway(tmp_path, tiny_model_dir, loss):
    from alignkit.train.preference import train_preference

    data = write_jsonl(tmp_path / "k.jsonl", make_kway(4, k=3))
    cfg = _cfg("dpo", tmp_path, tiny_model_dir, data, **{"train.max_steps": 1, "loss.type": loss,
                                                         "logit_temperature": 0.8})
    summary = train_preference(cfg)
    assert summary["steps"] == 1 and _changed_everywhere(tiny_model_dir, summary["output_dir"]) == []


def test_kway_rows_refused_for_pair_loss(tmp_path, tiny_model_dir):
    from alignkit.errors import DataError
    from alignkit.train.preference import train_preference

    data = write_jsonl(tmp_path / "k.jsonl", make_kway(2))
    with pytest.raises(DataError, match="K-way rows need loss exo or dpo_rw"):
        train_preference(_cfg("dpo", tmp_path, tiny_model_dir, data, **{"train.max_steps": 1}))


def test_one_step_sft_and_hf_loadable(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from alignkit.train.sft import train_sft

    data = write_jsonl(tmp_path / "s.jsonl", make_sft(4))
    summary = train_sft(_cfg("sft", tmp_path, tiny_model_dir, data, **{"train.max_steps": 1}))
    assert _changed_everywhere(tiny_model_dir, summary["output_dir"]) == []
    AutoModelForCausalLM.from_pretrained(summary["output_dir"])
    logged = [json.loads(x) for x in open(os.path.join(summary["output_dir"], "metrics.jsonl"))]
    assert logged[0]["step"] == 1 and logged[0]["units"] > 0


def test_one_step_rm_matches_hf_pooling(tmp_path, tiny_model_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from alignkit.train.reward import train_rm
    from alignkit.train.run import RewardForward

    data = write_jsonl(tmp_path / "p.jsonl", make_pairs(4))
    summary = train_rm(_cfg("rm", tmp_path, tiny_model_dir, data, **{"train.max_steps": 1}))
    out = summary["output_dir"]
    model = AutoModelForSequenceClassification.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.pad_token_id != tok.eos_token_id and model.config.pad_token_id == tok.pad_token_id
    texts = ["<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nhello there<|im_end|>",
             "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nno<|im_end|>"]
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        hf = model(**enc).logits.squeeze(-1)
        ours = RewardForward(model)(enc["input_ids"], enc["attention_mask"])
    assert torch.allclose(hf, ours, atol=1e-5)


def _run_dpo(tmp_path, model_dir, data, name, **train):
    from alignkit.train.preference import train_preference

    cfg = _cfg("dpo", tmp_path, model_dir, data, **{"train.output_dir": str(tmp_path / name), **train})
    return train_preference(cfg)


# Adam's first update is ~lr * sign(g): a large eps makes it smooth in g, so the weights compare
# the accumulated gradients rather than the signs of fp32 rounding noise on near-zero entries.
SMOOTH = {"train.adam_eps": 1e-2}
FP32 = {"train.precision": "fp32"}  # exact invariants are fp32 properties: never leave them to `auto`

# Tolerances of the accumulation invariants, per precision. fp32: the invariant is exact up to summation
# order (1e-6). bf16 (autocast: bf16 matmuls, fp32 master weights): a different micro-batch split changes
# the bf16 matmul shapes, so each gradient entry carries a relative error of a few bf16 ulps
# (2^-8 = 3.9e-3 each). Adam's first step with eps=1e-2 is lr*g/(|g|+eps), whose sensitivity to a
# relative error r in g is at most lr*r/4 (the maximum of |g|*eps/(|g|+eps)^2 is 1/4): 32 ulps give
# lr*32*2^-8/4 = 3.1e-5 at lr=1e-3 (measured on an AMX Xeon: 5.4e-6 pairs, 1.0e-5 SFT).
# The loss (~ln 2) moves by at most a few ulps of itself: 4*2^-8*ln2 = 0.011.
ACCUM_TOL = {"fp32": {"weights": 1e-6, "loss": 1e-6},
             "bf16": {"weights": 1e-3 * 32 * 2**-8 / 4, "loss": 4 * 2**-8 * math.log(2)}}


@pytest.mark.precision_sensitive
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_grad_accumulation_invariant_pairs(tmp_path, tiny_model_dir, precision):
    data = write_jsonl(tmp_path / "p.jsonl", make_pairs(8))
    prec = {"train.precision": precision, **SMOOTH}
    a = _run_dpo(tmp_path, tiny_model_dir, data, "a", **{"train.max_steps": 1, "train.batch_size": 8, **prec})
    b = _run_dpo(tmp_path, tiny_model_dir, data, "b", **{"train.max_steps": 1, "train.batch_size": 1,
                                                         "train.grad_accum": 8, **prec})
    assert a["precision"]["precision"] == b["precision"]["precision"] == precision
    pa, pb = _params(a["output_dir"]), _params(b["output_dir"])
    assert max((pa[k] - pb[k]).abs().max().item() for k in pa) < ACCUM_TOL[precision]["weights"]
    assert abs(a["final_loss"] - b["final_loss"]) < ACCUM_TOL[precision]["loss"]


@pytest.mark.precision_sensitive
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_grad_accumulation_invariant_sft_token_weighting(tmp_path, tiny_model_dir, precision):
    """Sequences of very different lengths: per-micro-batch averaging would differ; global token sums do not."""
    from alignkit.train.sft import train_sft

    data = write_jsonl(tmp_path / "s.jsonl", make_sft(8, seed=3))
    outs = []
    for name, bs, ga in (("a", 8, 1), ("b", 1, 8), ("c", 2, 4)):
        cfg = _cfg("sft", tmp_path, tiny_model_dir, data, **{"train.max_steps": 1, "train.batch_size": bs, **SMOOTH,
                                                             "train.grad_accum": ga, "train.precision": precision,
                                                             "train.output_dir": str(tmp_path / name)})
        outs.append(_params(train_sft(cfg)["output_dir"]))
    for other in outs[1:]:
        assert max((outs[0][k] - other[k]).abs().max().item() for k in other) < ACCUM_TOL[precision]["weights"]


def test_sft_packed_equals_padded(tmp_path, tiny_model_dir):
    """Padding-free SFT batches (pack=true, the default) give the padded batches' loss, held-out NLL and update."""
    from alignkit.train.sft import train_sft

    data = write_jsonl(tmp_path / "s.jsonl", make_sft(12, seed=5))
    runs = {}
    for pack in (True, False):
        cfg = _cfg("sft", tmp_path, tiny_model_dir, data, **{"train.max_steps": 2, "train.batch_size": 6, **SMOOTH,
                                                             **FP32, "pack": str(pack).lower(), "data.eval_fraction": 0.25,
                                                             "train.output_dir": str(tmp_path / f"pack-{pack}")})
        runs[pack] = train_sft(cfg)
    assert runs[True]["pack"] is True and runs[False]["pack"] is False
    assert abs(runs[True]["final_loss"] - runs[False]["final_loss"]) < 1e-5
    for when in ("eval_before", "eval_after"):
        assert abs(runs[True][when]["nll"] - runs[False][when]["nll"]) < 1e-5
        assert runs[True][when]["tokens"] == runs[False][when]["tokens"]
    pa, pb = _params(runs[True]["output_dir"]), _params(runs[False]["output_dir"])
    assert max((pa[k] - pb[k]).abs().max().item() for k in pa) < 1e-6


@pytest.mark.precision_sensitive
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_resume_equivalence(tmp_path, tiny_model_dir, monkeypatch, precision):
    """Interrupted by a real SIGINT after step 2, resumed to step 4 == 4 uninterrupted steps: the same
    operations on the same shapes, so this holds to fp32 summation order in bf16 autocast too."""
    from alignkit.train import loop

    data = write_jsonl(tmp_path / "p.jsonl", make_pairs(16))
    common = {"train.max_steps": 4, "train.batch_size": 2, "train.grad_accum": 2, "train.lr": 1e-3,
              "train.warmup_steps": 1, "train.precision": precision}
    full = _run_dpo(tmp_path, tiny_model_dir, data, "full", **common)

    original = loop.Trainer.train_step

    def interrupting_step(self):
        logs = original(self)
        if self.step == 2 and not getattr(self, "_fired", False):
            self._fired = True
            os.kill(os.getpid(), signal.SIGINT)
        return logs

    monkeypatch.setattr(loop.Trainer, "train_step", interrupting_step)
    part = _run_dpo(tmp_path, tiny_model_dir, data, "part", **common)
    assert part["interrupted"] and part["steps"] == 2 and part["signal"] == "SIGINT"
    monkeypatch.setattr(loop.Trainer, "train_step", original)
    from alignkit.train.preference import train_preference

    cfg = _cfg("dpo", tmp_path, tiny_model_dir, data, **{"train.output_dir": str(tmp_path / "part"), **common})
    resumed = train_preference(cfg, resume=True)
    assert resumed["steps"] == 4 and not resumed["interrupted"]
    pf, pr = _params(full["output_dir"]), _params(resumed["output_dir"])
    assert max((pf[k] - pr[k]).abs().max().item() for k in pf) < 1e-6


def test_nan_guard_stops_with_diagnostic(tmp_path, tiny_model_dir, monkeypatch):
    from alignkit.train import preference
    from alignkit.train.loop import NonFiniteError

    def nan_call(self, model, batch):
        logps, _ = preference.forward_logps(model, batch)
        return logps.sum() * float("nan"), {}

    monkeypatch.setattr(preference.PreferenceObjective, "__call__", nan_call)
    data = write_jsonl(tmp_path / "p.jsonl", make_pairs(4))
    with pytest.raises(NonFiniteError, match=r"step 0, micro-batch 0: loss is nan \(rows \[.*\], lr"):
        _run_dpo(tmp_path, tiny_model_dir, data, "nan", **{"train.max_steps": 1})


def test_reference_cache_reused_and_invalidated(tmp_path, tiny_model_dir):
    data = write_jsonl(tmp_path / "p.jsonl", make_pairs(4))
    a = _run_dpo(tmp_path, tiny_model_dir, data, "a", **{"train.max_steps": 1})
    b = _run_dpo(tmp_path, tiny_model_dir, data, "b", **{"train.max_steps": 1, "loss.beta": 0.5})
    assert not a["reference_cache"]["hit"] and b["reference_cache"]["hit"]
    assert a["reference_cache"]["fingerprint"] == b["reference_cache"]["fingerprint"]
    c = _run_dpo(tmp_path, tiny_model_dir, data, "c", **{"train.max_steps": 1, "data.eval_fraction": 0.25})
    d = _run_dpo(tmp_path, tiny_model_dir, data, "d", **{"train.max_steps": 1, "logit_temperature": 0.8})
    assert not c["reference_cache"]["hit"] and not d["reference_cache"]["hit"]
    assert len({a["reference_cache"]["fingerprint"], c["reference_cache"]["fingerprint"],
                d["reference_cache"]["fingerprint"]}) == 3


def test_everything_dropped_is_a_clear_error(tmp_path, tiny_model_dir):
    from alignkit.errors import DataError

    data = write_jsonl(tmp_path / "p.jsonl", make_pairs(3))
    with pytest.raises(DataError, match=r"no training rows left after the data policy \(\{'rows': 3, 'kept': 0, "
                                         r"'dropped_long_prompt': 3\}\)"):
        _run_dpo(tmp_path, tiny_model_dir, data, "x", **{"data.policy.max_prompt_length": 5})


def test_lora_dpo_exports_merged_model_and_adapter(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from alignkit.train.preference import train_preference

    data = write_jsonl(tmp_path / "p.jsonl", make_pairs(4))
    cfg = _cfg("dpo", tmp_path, tiny_model_dir, data, **{"train.max_steps": 1, "model.lora.r": 4,
                                                         "model.lora.alpha": 8, "train.eval_every": 1,
                                                         "data.eval_fraction": 0.5})
    summary = train_preference(cfg)
    out = summary["output_dir"]
    assert os.path.isfile(os.path.join(out, "adapter", "adapter_config.json"))
    merged = AutoModelForCausalLM.from_pretrained(out).state_dict()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    changed = [k for k in base if not torch.equal(base[k], merged[k])]
    # only the adapted attention projections differ after merging
    assert changed and all(any(m in k for m in ("q_proj", "k_proj", "v_proj", "o_proj")) for k in changed)
    logged = [json.loads(x) for x in open(os.path.join(out, "metrics.jsonl"))]
    assert "eval/reward_acc" in logged[0] and summary["eval_after"]["n"] == 2


def test_gradient_checkpointing_same_update(tmp_path, tiny_model_dir):
    data = write_jsonl(tmp_path / "p.jsonl", make_pairs(4))
    a = _run_dpo(tmp_path, tiny_model_dir, data, "a", **{"train.max_steps": 1, **SMOOTH, **FP32})
    b = _run_dpo(tmp_path, tiny_model_dir, data, "b", **{"train.max_steps": 1, "model.gradient_checkpointing": True,
                                                         **SMOOTH, **FP32})
    pa, pb = _params(a["output_dir"]), _params(b["output_dir"])
    assert max((pa[k] - pb[k]).abs().max().item() for k in pa) < 1e-6


@pytest.mark.parametrize("fast", [True, False], ids=["packed-shared", "separate"])
def test_bf16_reference_matches_initial_policy_exactly(tmp_path, tiny_model_dir, fast):
    """Under bf16 the reference pass uses the training micro-batches, so step 0 is exactly ln 2.

    (Length-sorted reference batches pad sequences differently from training; bf16 rounding then
    differs and the step-0 log-ratio is not 0 — found by benchmarks/dpo_vs_trl.py.)
    """
    import math

    rows = make_pairs(12, seed=5)
    for i, r in enumerate(rows):  # very different lengths so padding widths differ between batchings
        r["chosen"][0]["content"] = " ".join(["word"] * (1 + 9 * (i % 4)))
    data = write_jsonl(tmp_path / "p.jsonl", rows)
    out = _run_dpo(tmp_path, tiny_model_dir, data, "bf", **{"train.max_steps": 1, "train.batch_size": 3,
                                                            "train.grad_accum": 2, "train.precision": "bf16",
                                                            "batching.pack": fast, "batching.shared_prompt": fast})
    logged = json.loads(open(os.path.join(out["output_dir"], "metrics.jsonl")).readline())
    assert abs(logged["loss"] - math.log(2)) < 1e-6 and logged["rewards/margins"] == 0.0
    assert out["batching"] == {"pack": fast, "shared_prompt": fast}


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_eval_before_training_has_zero_implicit_reward(tmp_path, tiny_model_dir, precision):
    """Before the first step the policy is the reference: the held-out implicit reward margin is exactly 0
    in either precision (the eval pass runs under the same autocast as the reference's)."""
    data = write_jsonl(tmp_path / "p.jsonl", make_pairs(12, seed=5))
    out = _run_dpo(tmp_path, tiny_model_dir, data, "ev", **{"train.max_steps": 1, "train.batch_size": 3,
                                                            "data.eval_fraction": 0.5, "train.precision": precision})
    assert out["eval_before"]["n"] == 6 and out["eval_before"]["reward_margin"] == 0.0


def test_kway_rows_with_unequal_k_train_with_masked_candidates(tmp_path, tiny_model_dir):
    """Some responses failed judging: K differs per prompt; missing candidates are masked and counted."""
    from alignkit.train.preference import train_preference

    rows = make_kway(4, k=4)
    rows[1]["completions"], rows[1]["rewards"] = rows[1]["completions"][:2], rows[1]["rewards"][:2]
    rows[3]["completions"], rows[3]["rewards"] = rows[3]["completions"][:3], rows[3]["rewards"][:3]
    data = write_jsonl(tmp_path / "k.jsonl", rows)
    summary = train_preference(_cfg("dpo", tmp_path, tiny_model_dir, data, **{
        "train.max_steps": 1, "train.batch_size": 4, "loss.type": "exo", "nll_weight": 0.1}))
    assert summary["steps"] == 1 and math.isfinite(summary["final_loss"])
    assert summary["kway_padding"] == {"k_max": 4, "rows_padded": 2, "masked_candidates": 3}
