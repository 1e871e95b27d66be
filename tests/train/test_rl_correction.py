"""Behaviour log-probs and importance-sampling correction (``correction: none | tis | mis``): the weight
functions against hand computations, the engines' processed log-probs against a full forward, and
``alignkit rl`` runs (fp32 pinned) where the behaviour log-probs are the trainer's own (identical to
``none``) or shifted by a known amount (metrics and losses as computed by hand)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from alignkit.data.verifiable import DEMO_HELDOUT
from alignkit.losses import policy as P

QUIET = ["train.progress=false", "train.report_to=[]", "train.report=false"]


# ------------------------------------------------------------------------------------- pure functions
def test_truncated_is_weights_hand_computed():
    old = torch.tensor([[-1.0, -2.0, -0.5], [-3.0, -1.0, 0.0]])
    mu = torch.tensor([[-1.0, -2.5, -2.0], [-2.0, -1.0, 5.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    w, clipped = P.truncated_is_weights(old, mu, mask, cap=2.0)
    expected = [[1.0, math.exp(0.5), 2.0], [math.exp(-1.0), 1.0, 1.0]]  # exp(1.5) = 4.48 -> 2; off-mask -> 1
    torch.testing.assert_close(w, torch.tensor(expected), rtol=0, atol=1e-7)
    assert clipped.tolist() == [[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
    same, none_clipped = P.truncated_is_weights(old, old.clone(), mask, cap=2.0)
    assert torch.equal(same, torch.ones_like(old)) and none_clipped.sum() == 0  # exactly 1 on-policy


def test_sequence_is_mask_is_the_geometric_mean_ratio():
    old = torch.tensor([[-1.0, -1.0, -1.0], [-1.0, -1.0, 0.0], [0.0, 0.0, 0.0], [-2.0, -2.0, -2.0]])
    mu = torch.tensor([[-1.3, -1.3, -0.4], [-2.0, -2.0, 9.0], [0.0, 0.0, 0.0], [-1.0, -1.0, -1.0]])
    mask = torch.tensor([[True] * 3, [True, True, False], [False] * 3, [True] * 3])
    keep, rho = P.sequence_is_mask(old, mu, mask, cap=2.0)
    # row 0: mean log ratio (0.3 + 0.3 - 0.6) / 3 = 0; row 1: (1 + 1) / 2 = 1 -> e > 2; row 2: no token;
    # row 3: -1 -> 1/e < 1/2
    torch.testing.assert_close(rho, torch.tensor([1.0, math.e, 1.0, math.exp(-1.0)]), rtol=1e-6, atol=1e-6)
    assert keep.tolist() == [True, False, True, False]


def test_ppo_loss_weights_each_token_and_ones_change_nothing():
    g = torch.Generator().manual_seed(0)
    lp, old, adv = (torch.randn(2, 4, generator=g) for _ in range(3))
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    w = torch.rand(2, 4, generator=g) * 2
    plain, _ = P.ppo_policy_loss(lp, old, adv, mask, 0.2)
    weighted, _ = P.ppo_policy_loss(lp, old, adv, mask, 0.2, w)
    ones, _ = P.ppo_policy_loss(lp, old, adv, mask, 0.2, torch.ones(2, 4))
    torch.testing.assert_close(weighted, plain * w)
    assert torch.equal(ones, plain)


# ------------------------------------------------------------------------- engines: processed log-probs
def _full_forward_logits(model, prompt_ids, tokens):
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt_ids + tokens])).logits[0].float()
    return logits[len(prompt_ids) - 1 : len(prompt_ids) - 1 + len(tokens)]


def _processed(logits, tok, temperature, top_k=0, top_p=1.0):
    """log mu(tok) by hand: temperature, then top-k (renormalised), then the nucleus (renormalised)."""
    z = logits / temperature
    if top_k:
        kth = z.topk(top_k).values[-1]
        z = z.masked_fill(z < kth, float("-inf"))
    p = torch.softmax(z.double(), -1)
    if top_p < 1.0:
        sorted_p, order = p.sort(descending=True)
        drop = (sorted_p.cumsum(-1) - sorted_p) >= top_p
        p = p.clone()
        p[order[drop]] = 0.0
        p = p / p.sum()
    return float(p[tok].log())


@pytest.mark.parametrize("top_k, top_p", [(0, 1.0), (5, 1.0), (0, 0.9)])
def test_hf_engine_returns_log_probs_of_the_distribution_sampled_from(tiny_lm, tokenizer, top_k, top_p):
    from alignkit.generate.engine import HFEngine, SamplingParams

    torch.manual_seed(0)
    model = tiny_lm[0].float()
    with torch.no_grad():
        model.lm_head.weight.mul_(20.0)  # a peaked distribution, so top-k / top-p cut real mass
    engine = HFEngine(model, tokenizer, batch_size=4)
    params = SamplingParams(max_new_tokens=5, temperature=0.7, top_k=top_k, top_p=top_p, n=2, seed=3,
                            sampled_logprobs=True)
    prompts = ["Say hi.", "Count to three, please."]
    for prompt, res in zip(prompts, engine.generate(prompts, params), strict=True):
        for c in res.completions:
            assert len(c.sampled_logprobs) == len(c.token_ids)
            logits = _full_forward_logits(model, engine.encode(prompt), c.token_ids)
            by_hand = [_processed(logits[i], t, 0.7, top_k, top_p) for i, t in enumerate(c.token_ids)]
            assert c.sampled_logprobs == pytest.approx(by_hand, abs=2e-4)
            if top_k or top_p < 1:  # not the raw model's distribution
                raw = [float(torch.log_softmax(logits[i], -1)[t]) for i, t in enumerate(c.token_ids)]
                assert max(abs(a - b) for a, b in zip(c.sampled_logprobs, raw, strict=True)) > 1e-3


def test_sampled_logprobs_refused_for_greedy_and_on_a_raw_vllm_engine(tiny_model_dir, monkeypatch):
    from tests.generate.fake_vllm import install

    from alignkit.generate.engine import GenerationError, SamplingParams, VLLMEngine

    with pytest.raises(GenerationError, match="needs temperature > 0"):
        SamplingParams(temperature=0.0, sampled_logprobs=True).validate()
    install(monkeypatch)
    raw = VLLMEngine(tiny_model_dir)
    with pytest.raises(GenerationError, match="logprobs_mode='processed_logprobs'"):
        raw.generate(["hi"], SamplingParams(max_new_tokens=2, temperature=1.0, sampled_logprobs=True))
    processed = VLLMEngine(tiny_model_dir, logprobs_mode="processed_logprobs")
    assert processed.llm.kwargs["logprobs_mode"] == "processed_logprobs"
    with pytest.raises(GenerationError, match="top logprobs are documented as raw"):
        processed.generate(["hi"], SamplingParams(max_new_tokens=2, temperature=1.0, logprobs=2))
    params = SamplingParams(max_new_tokens=3, temperature=0.5, seed=1, sampled_logprobs=True)
    (res,) = processed.generate(["hi"], params)
    c = res.completions[0]
    logits = _full_forward_logits(processed.llm.model, processed.encode("hi"), c.token_ids)
    assert c.sampled_logprobs == pytest.approx([_processed(logits[i], t, 0.5) for i, t in enumerate(c.token_ids)],
                                               abs=1e-4)


# ------------------------------------------------------------------------------------- alignkit rl runs
def _run(model_dir, out, **kw):
    from alignkit.config import load_config
    from alignkit.train.rl import RLConfig, train_rl

    base = {"model.name_or_path": model_dir, "data.train": str(DEMO_HELDOUT), "rollout.prompts_per_step": 2,
            "rollout.n": 2, "rollout.max_new_tokens": 6, "train.max_steps": 2, "train.lr": 1e-3,
            "train.adam_eps": 1e-3, "advantage.type": "grpo", "critic": "null", "kl.mode": "loss",
            "kl.coef": 0.04, "reward.verifier": "tests.train.rl_fakes:varied", "reward.normalize": "false",
            "ppo.micro_batch_size": 2, "ppo.num_minibatches": 2, "train.precision": "fp32",
            "train.output_dir": str(out)}
    base.update(kw)
    s = train_rl(load_config(RLConfig, None, [f"{k}={v}" for k, v in base.items()] + QUIET))
    assert s["precision"]["precision"] == "fp32"
    logged = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    from safetensors.torch import load_file

    return logged, load_file(out / "model.safetensors")


def _behaviour_is(monkeypatch, shift: float | None):
    """Replace the engine's behaviour log-probs by the trainer's own old log-probs (``shift=None`` -- the
    same numerics) or by ``old - shift`` (pi_old / mu = e^shift on every token)."""
    from alignkit.train import rl

    real = rl.rollout_tensors

    def patched(ctx, samples):
        t = real(ctx, samples)
        t["behaviour_logps"] = t["old_logps"].clone() if shift is None else t["old_logps"] - shift
        return t

    monkeypatch.setattr(rl, "rollout_tensors", patched)


def test_on_policy_with_the_same_numerics_weights_are_one_and_runs_identical(tmp_path, tiny_model_dir, monkeypatch):
    _behaviour_is(monkeypatch, None)
    runs = {c: _run(tiny_model_dir, tmp_path / c, correction=c) for c in ("none", "tis", "mis")}
    for logged, _ in runs.values():
        for row in logged:
            assert row["mismatch/kl"] == 0.0 and row["mismatch/is_weight_mean"] == 1.0
            assert row["mismatch/clipped_frac"] == 0.0
    base = runs["none"][1]
    for c in ("tis", "mis"):
        assert all(torch.equal(base[k], runs[c][1][k]) for k in base), c
        assert [r["loss/policy"] for r in runs[c][0]] == [r["loss/policy"] for r in runs["none"][0]]


def test_real_engine_mismatch_is_logged_and_tiny_in_fp32(tmp_path, tiny_model_dir):
    """No patch: the HF engine's KV-cached decode vs the trainer's full forward differ by float rounding only."""
    logged, _ = _run(tiny_model_dir, tmp_path / "real", correction="tis", **{"train.max_steps": 1})
    row = logged[0]
    assert 0.0 <= row["mismatch/kl"] < 1e-6
    assert row["mismatch/is_weight_mean"] == pytest.approx(1.0, abs=1e-4)
    assert row["mismatch/clipped_frac"] == 0.0


def test_perturbed_behaviour_weights_and_losses_match_hand_computation(tmp_path, tiny_model_dir, monkeypatch):
    one = {"train.max_steps": 1, "ppo.num_minibatches": 1, "kl.coef": 0.0, "rollout.prompts_per_step": 4,
           "rollout.n": 4, "rollout.max_new_tokens": 12}
    _behaviour_is(monkeypatch, 0.5)
    none, _ = _run(tiny_model_dir, tmp_path / "none", correction="none", **one)
    tis, _ = _run(tiny_model_dir, tmp_path / "tis", correction="tis", **one)
    w = math.exp(0.5)
    assert none[0]["mismatch/is_weight_mean"] == pytest.approx(w, rel=1e-6)
    assert none[0]["mismatch/kl"] == pytest.approx(w - 1 - 0.5, rel=1e-5)  # k3 of log rho = 0.5
    assert none[0]["mismatch/clipped_frac"] == 0.0 and tis[0]["mismatch/is_weight_mean"] == pytest.approx(w, rel=1e-6)
    # one minibatch at the rollout weights: ratio 1, the surrogate is -A per token, so tis scales it, and its
    # gradient (the logged norm, taken before clipping), by w exactly (the loss itself is ~0: a group's
    # advantages sum to 0)
    assert none[0]["grad_norm"] > 1e-4
    assert tis[0]["grad_norm"] == pytest.approx(w * none[0]["grad_norm"], rel=1e-5)

    _behaviour_is(monkeypatch, 1.0)  # rho = e > C = 2
    capped, _ = _run(tiny_model_dir, tmp_path / "capped", correction="tis", **one)
    assert capped[0]["mismatch/is_weight_mean"] == pytest.approx(2.0, rel=1e-6)
    assert capped[0]["mismatch/clipped_frac"] == 1.0
    assert capped[0]["grad_norm"] == pytest.approx(2.0 * none[0]["grad_norm"], rel=1e-5)
    masked, after = _run(tiny_model_dir, tmp_path / "mis", **one, **{"correction.type": "mis", "correction.cap": 2.0})
    assert masked[0]["mismatch/clipped_frac"] == 1.0  # every sample's geometric mean ratio is e > 2
    from transformers import AutoModelForCausalLM

    before = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    assert all(torch.equal(before[k], after[k]) for k in after)  # nothing left to learn from
    wide, _ = _run(tiny_model_dir, tmp_path / "wide", **one, **{"correction.type": "mis", "correction.cap": 3.0})
    assert wide[0]["mismatch/clipped_frac"] == 0.0


def test_correction_config_shorthand_and_refusals(tmp_path):
    from alignkit.config import load_config
    from alignkit.errors import ConfigError
    from alignkit.train.rl import RLConfig

    args = [f"data.train={DEMO_HELDOUT}", "advantage.type=grpo", "critic=null"]
    assert load_config(RLConfig, None, [*args, "correction=tis"]).correction.type == "tis"
    assert load_config(RLConfig, None, args).correction.type == "none"
    with pytest.raises(ConfigError, match="correction"):
        load_config(RLConfig, None, [*args, "correction=bogus"])
    with pytest.raises(ConfigError, match="cap"):
        load_config(RLConfig, None, [*args, "correction.cap=1.0"])
