"""KL of a trained policy to its reference, measured on the policy's own samples (reward–KL frontiers).

The policy answers every prompt ``n`` times at temperature 1 (each request seeded from
``(seed, prompt position)`` as in ``alignkit rl``, so every policy is measured on the same requests),
and both models score the sampled tokens. Per sequence, with ``log_r_t = log pi_ref(y_t|.) - log pi(y_t|.)``:

* ``k1 = sum_t -log_r_t``: unbiased for ``KL(pi || pi_ref)`` over responses (single samples can be < 0);
* ``k3 = sum_t (exp(log_r_t) - 1 - log_r_t)``: each term is >= 0 and unbiased for the per-token KL
  given the prefix, so the sum is unbiased for the sequence KL too (Schulman 2020, "Approximating KL").

Both are of the distribution of responses cut at ``max_new_tokens`` (a truncated response is the
sequence the policy produced so far). The same samples come back (``samples``) so a caller can score
them with a reward, e.g. the verifier's sampled pass rate beside the greedy one.
"""

from __future__ import annotations

import math
from typing import Any

import torch


@torch.no_grad()
def sampled_kl(policy, reference, tokenizer, rows: list[dict[str, Any]], *, n: int = 1, max_new_tokens: int = 64,
               seed: int = 0, batch_size: int = 16, micro_batch_size: int = 8) -> dict[str, Any]:
    """Mean per-sequence k1 / k3 estimates of ``KL(policy || reference)`` on ``n`` samples per prompt row.

    ``policy`` and ``reference`` are causal LMs sharing ``tokenizer``; ``rows`` carry ``prompt``
    (string or messages). Returns ``{"n_prompts", "n_samples", "k1_mean", "k1_sem", "k3_mean",
    "k3_sem", "response_tokens_mean", "truncated_frac", "samples"}`` where ``samples`` lists the
    :class:`alignkit.train.rl_rollout.Sample` objects (prompt-major, ``n`` per prompt).
    """
    from alignkit.generate.engine import HFEngine, SamplingParams
    from alignkit.losses.policy import kl_penalty
    from alignkit.train.rl_rollout import TokenLogpsForward, collate_samples, rollout

    engine = HFEngine(policy, tokenizer, batch_size=batch_size)
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=1.0, n=n)
    positions = list(range(len(rows)))
    samples = rollout(engine, rows, positions, positions, params, seed, 0)
    pol, ref = TokenLogpsForward(policy).eval(), TokenLogpsForward(reference).eval()
    device = next(policy.parameters()).device
    k1, k3 = [], []
    for i in range(0, len(samples), micro_batch_size):
        b = collate_samples(samples[i : i + micro_batch_size], tokenizer.pad_token_id, device)
        args = (b["input_ids"], b["attention_mask"], b["loss_mask"])
        logps, ref_logps, mask = pol(*args)[0].double(), ref(*args)[0].double(), b["loss_mask"]
        k1.append((kl_penalty(logps, ref_logps, "k1") * mask).sum(-1))
        k3.append((kl_penalty(logps, ref_logps, "k3") * mask).sum(-1))
    k1_all, k3_all = torch.cat(k1), torch.cat(k3)
    return {"n_prompts": len(rows), "n_samples": len(samples),
            "k1_mean": float(k1_all.mean()), "k1_sem": _sem(k1_all),
            "k3_mean": float(k3_all.mean()), "k3_sem": _sem(k3_all),
            "response_tokens_mean": sum(len(s.response_ids) for s in samples) / max(len(samples), 1),
            "truncated_frac": sum(s.finish_reason == "length" for s in samples) / max(len(samples), 1),
            "samples": samples}


def _sem(x: torch.Tensor) -> float:
    """Standard error of the mean (nan for fewer than two values)."""
    return float(x.std(unbiased=True) / math.sqrt(x.numel())) if x.numel() > 1 else math.nan
