"""Sampled KL to the reference: zero for the reference itself, unbiased against the exact KL of the
first token, and per-sequence sums equal to an independent log-softmax computation."""

from __future__ import annotations

import pytest
import torch

from alignkit.evals.policy_kl import sampled_kl

ROWS = [{"prompt": "Say hello."}, {"prompt": [{"role": "user", "content": "Name a colour."}]}]


def _sharp(tokenizer, seed: int):
    """A tiny random Llama with sharpened logits (a random init is near-uniform over the vocabulary)."""
    from alignkit.models import tiny_random_causal_lm

    model, _ = tiny_random_causal_lm(tokenizer, seed=seed)
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)
    return model.eval()


def _next_token_logps(model, tokenizer, prompt_ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return torch.log_softmax(model(torch.tensor([prompt_ids])).logits[0, -1].double(), -1)


def test_reference_against_itself_is_zero(tokenizer):
    model = _sharp(tokenizer, 0)
    out = sampled_kl(model, model, tokenizer, ROWS, n=3, max_new_tokens=6)
    assert out["n_prompts"] == 2 and out["n_samples"] == 6 and len(out["samples"]) == 6
    assert out["k1_mean"] == 0.0 and out["k3_mean"] == 0.0
    assert out["response_tokens_mean"] > 0


def test_first_token_estimates_match_the_exact_kl(tokenizer):
    from alignkit.generate.engine import HFEngine

    policy, reference = _sharp(tokenizer, 0), _sharp(tokenizer, 1)
    engine = HFEngine(policy, tokenizer)
    exact = []
    for row in ROWS:
        ids = engine.encode(row["prompt"])
        p, q = _next_token_logps(policy, tokenizer, ids), _next_token_logps(reference, tokenizer, ids)
        exact.append(float((p.exp() * (p - q)).sum()))
    want = sum(exact) / len(exact)
    out = sampled_kl(policy, reference, tokenizer, ROWS, n=300, max_new_tokens=1, seed=3, batch_size=64,
                     micro_batch_size=64)
    assert want > 0.05  # the models differ enough for the check to mean something
    for key in ("k1", "k3"):
        assert abs(out[f"{key}_mean"] - want) < 4 * out[f"{key}_sem"], (key, out[f"{key}_mean"], want)
    # the same seed gives the same samples, hence the same estimate
    again = sampled_kl(policy, reference, tokenizer, ROWS, n=300, max_new_tokens=1, seed=3, batch_size=64,
                       micro_batch_size=64)
    assert again["k1_mean"] == out["k1_mean"]


def test_per_sequence_sums_match_log_softmax_of_the_full_forward(tokenizer):
    policy, reference = _sharp(tokenizer, 0), _sharp(tokenizer, 1)
    out = sampled_kl(policy, reference, tokenizer, ROWS, n=2, max_new_tokens=5, seed=1, micro_batch_size=3)
    k1 = []
    for s in out["samples"]:
        ids = torch.tensor([s.prompt_ids + s.response_ids])
        with torch.no_grad():
            lp = torch.log_softmax(policy(ids).logits[0].double(), -1)
            lq = torch.log_softmax(reference(ids).logits[0].double(), -1)
        pos = torch.arange(len(s.prompt_ids) - 1, ids.shape[1] - 1)
        tgt = ids[0, pos + 1]
        k1.append(float((lp[pos, tgt] - lq[pos, tgt]).sum()))
    assert out["k1_mean"] == pytest.approx(sum(k1) / len(k1), abs=1e-4)
    assert out["k3_mean"] >= 0
