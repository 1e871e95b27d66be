"""Policy-optimisation maths for online RL: pure functions of tensors (torch only).

Layout: every per-token tensor is ``(B, L)`` in *response layout* -- row ``b`` holds the response
tokens of sequence ``b`` left-aligned, and ``mask`` ``(B, L)`` (bool) is True on real response tokens
(False on padding and on samples masked out of the update). Per-sequence tensors are ``(B,)``.

Losses return per-token values (zero where ``mask`` is False) so that the caller can reduce them
with :func:`masked_sum` and divide by a **global** count (tokens or sequences of the whole optimizer
step, summed over gradient accumulation and processes) -- never by a per-micro-batch mean, which
weights tokens unequally across micro-batches (OpenRLHF #1249/#1250, verl #6957).
"""

from __future__ import annotations

import torch
from torch import Tensor


def masked_sum(values: Tensor, mask: Tensor) -> Tensor:
    """``sum_{b,t} values[b,t] * mask[b,t]`` as a 0-d tensor (keeps gradients)."""
    return (values * mask.to(values.dtype)).sum()


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean over masked entries (0 when nothing is masked in); for *metrics* and whitening only."""
    m = mask.to(values.dtype)
    return (values * m).sum() / m.sum().clamp(min=1)


def global_token_loss(per_token: Tensor, mask: Tensor, global_count: float) -> Tensor:
    """Token-level reduction: ``(1 / N) sum_{b,t} l[b,t] mask[b,t]`` with ``N`` given by the caller.

    ``N`` is the number of masked-in tokens of the *whole* optimizer step (all micro-batches, all
    processes). Summing the micro-batch results of a split batch then equals the full-batch value
    exactly: ``sum_j global_token_loss(l_j, m_j, N) == global_token_loss(l, m, N)``.
    """
    if global_count <= 0:
        raise ValueError(f"global_count must be > 0 (got {global_count})")
    return masked_sum(per_token, mask) / global_count


def global_sequence_loss(per_token: Tensor, mask: Tensor, global_count: float) -> Tensor:
    """Sequence-level reduction: ``(1 / S) sum_b mean_t l[b,t]``; ``S`` = sequences of the whole step.

    Each sequence's token mean weighs it equally whatever its length (the original PPO/GRPO
    "sample mean"); rows with no masked-in token contribute 0 and must not be counted in ``S``.
    """
    if global_count <= 0:
        raise ValueError(f"global_count must be > 0 (got {global_count})")
    m = mask.to(per_token.dtype)
    per_seq = (per_token * m).sum(-1) / m.sum(-1).clamp(min=1)
    return per_seq.sum() / global_count


def ppo_policy_loss(logps: Tensor, old_logps: Tensor, advantages: Tensor, mask: Tensor,
                    clip_eps: float = 0.2, is_weights: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO clipped surrogate (Schulman et al. 2017, arXiv 1707.06347, Eq. 7), per token.

    ``r_t = exp(logp_t - logp_old_t)``, ``l_t = -min(r_t A_t, clip(r_t, 1-eps, 1+eps) A_t)``.
    At ``r = 1`` the loss is ``-A_t`` and its gradient is ``-A_t * d logp_t`` (the policy
    gradient). ``is_weights`` (optional, ``(B, L)``, no gradient): the behaviour-mismatch importance
    weights of :func:`truncated_is_weights`, multiplying each token's surrogate,
    ``l_t = -w_t min(...)`` (truncated IS of Yao et al. 2025 as verl / TRL apply it). Shapes: ``(B, L)``
    each; returns per-token loss ``(B, L)`` (0 off-mask) and detached per-token metrics ``ratio`` and
    ``clipped`` (1 where the clipped term was selected).
    """
    ratio = torch.exp(logps - old_logps)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantages
    loss = -torch.minimum(unclipped, clipped)
    if is_weights is not None:
        loss = loss * is_weights.detach()
    m = mask.to(loss.dtype)
    return loss * m, {"ratio": ratio.detach(), "clipped": (clipped < unclipped).to(loss.dtype).detach()}


def behaviour_log_ratio(old_logps: Tensor, behaviour_logps: Tensor, mask: Tensor) -> Tensor:
    """``log rho_t = log pi_old(y_t) - log mu(y_t)`` on masked-in tokens, 0 elsewhere.

    ``mu`` is the behaviour policy: the distribution the rollout engine actually drew ``y_t`` from (its
    processed log-probabilities, :attr:`alignkit.generate.engine.SamplingParams.sampled_logprobs`);
    ``pi_old`` the trainer's log-probabilities of the same tokens before the update. Shapes ``(B, L)``.
    """
    return torch.where(mask, old_logps - behaviour_logps, torch.zeros_like(old_logps))


def truncated_is_weights(old_logps: Tensor, behaviour_logps: Tensor, mask: Tensor,
                         cap: float) -> tuple[Tensor, Tensor]:
    """Truncated importance sampling (TIS), token level: ``w_t = min(pi_old(y_t) / mu(y_t), C)``.

    Source: Yao et al. 2025, "Your efficient RL framework secretly brings you off-policy RL training"
    (the weight on the policy-gradient term; verl's ``rollout_is`` token level, TRL's
    ``vllm_importance_sampling_correction`` with ``vllm_importance_sampling_cap``, both C = 2 by default).
    Samples were drawn from mu, so ``E_mu[rho_t g_t] = E_pi_old[g_t]``; truncating at C bounds the variance
    at the price of a bias on tokens mu under-samples. Shapes ``(B, L)``; returns ``(weights, clipped)``:
    the weights (exactly 1 off-mask and wherever ``old_logps == behaviour_logps``), and a float indicator
    of the masked-in tokens whose ratio exceeded C.
    """
    ratio = torch.exp(behaviour_log_ratio(old_logps, behaviour_logps, mask))
    clipped = (ratio > cap) & mask
    return torch.clamp(ratio, max=cap), clipped.to(ratio.dtype)


def sequence_is_mask(old_logps: Tensor, behaviour_logps: Tensor, mask: Tensor,
                     cap: float) -> tuple[Tensor, Tensor]:
    """Masked importance sampling (MIS), sequence level: keep sequence ``b`` iff ``1/C <= rho_b <= C``.

    ``rho_b = exp(mean_t log(pi_old(y_t) / mu(y_t)))`` over the sequence's masked-in tokens: the
    *geometric mean* of the token ratios (verl's ``rollout_is_level: geometric``), not their product
    (TRL's ``sequence_mask``: ``exp(sum_t ...)``), because a product drifts with length -- a 0.001-nat
    per-token gap becomes a factor e over 1,000 tokens -- so a fixed [1/C, C] would reject long answers for
    being long. Rejecting instead of down-weighting follows the masked-IS variant of Liu et al. 2025 ("When
    speed kills stability"). Shapes: ``(B, L)`` in; returns ``(keep (B,) bool, rho (B,))``; a row with no
    masked-in token has ``rho = 1`` and is kept.
    """
    log_r = behaviour_log_ratio(old_logps, behaviour_logps, mask)
    n = mask.sum(-1).clamp(min=1).to(log_r.dtype)
    rho = torch.exp(log_r.sum(-1) / n)
    return (rho >= 1.0 / cap) & (rho <= cap), rho


def value_loss(values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor,
               clip_eps: float | None = 0.2) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped value loss (PPO2 baselines; Ouyang et al. 2022 use the same form), per token.

    ``l_t = 0.5 * max((V_t - R_t)^2, (V_old_t + clip(V_t - V_old_t, -eps, eps) - R_t)^2)``;
    ``clip_eps=None`` gives the plain ``0.5 (V_t - R_t)^2``. Shapes ``(B, L)``; returns per-token
    loss (0 off-mask) and the detached per-token ``clipped`` indicator.
    """
    plain = (values - returns) ** 2
    if clip_eps is None:
        loss, was_clipped = plain, torch.zeros_like(plain)
    else:
        v_clip = old_values + torch.clamp(values - old_values, -clip_eps, clip_eps)
        clipped = (v_clip - returns) ** 2
        loss, was_clipped = torch.maximum(plain, clipped), (clipped > plain).to(plain.dtype)
    m = mask.to(loss.dtype)
    return 0.5 * loss * m, {"clipped": was_clipped.detach()}


def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016, arXiv 1506.02438, Eq. 16).

    ``delta_t = r_t + gamma V_{t+1} - V_t`` (``V`` after the last response token is 0: the episode
    ends there); ``A_t = delta_t + gamma lam A_{t+1}``; returns ``R_t = A_t + V_t``. ``rewards`` and
    ``values`` are ``(B, L)`` per-token (the sequence score sits on the last token); ``mask`` must be
    a left-aligned prefix per row. Returns ``(advantages, returns)``, both 0 off-mask, no gradient.
    """
    m = mask.to(values.dtype)
    r, v = rewards.detach() * m, values.detach() * m
    adv = torch.zeros_like(v)
    last = torch.zeros_like(v[:, 0])
    for t in reversed(range(v.shape[1])):
        next_v = v[:, t + 1] if t + 1 < v.shape[1] else torch.zeros_like(last)
        delta = r[:, t] + gamma * next_v - v[:, t]
        last = (delta + gamma * lam * last) * m[:, t]
        adv[:, t] = last
    return adv, (adv + v) * m


def group_advantages(scores: Tensor, valid: Tensor, scale: bool = True, eps: float = 1e-6) -> Tensor:
    """GRPO group-relative advantages (Shao et al. 2024, arXiv 2402.03300, Sec. 4.1.2).

    ``scores`` ``(P, n)``: the reward of sample ``i`` of prompt ``p``; ``valid`` ``(P, n)`` bool (a
    sample whose reward could not be computed is left out of its group's statistics).
    ``A_pi = (r_pi - mean_j r_pj) / (std_j r_pj + eps)`` over the valid samples, ``std`` with Bessel's
    correction (as TRL); ``scale=False`` drops the division (Dr. GRPO, arXiv 2503.20783). Groups
    with fewer than 2 valid samples get advantage 0; invalid samples get 0. Returns ``(P, n)``.
    """
    v = valid.to(scores.dtype)
    s = torch.where(valid, scores, torch.zeros_like(scores))
    k = v.sum(-1, keepdim=True)
    mean = s.sum(-1, keepdim=True) / k.clamp(min=1)
    centred = (s - mean) * v
    adv = centred
    if scale:
        std = ((centred**2).sum(-1, keepdim=True) / (k - 1).clamp(min=1)).sqrt()
        adv = centred / (std + eps)
    return adv * (k >= 2).to(scores.dtype)


def rloo_advantages(scores: Tensor, valid: Tensor) -> Tensor:
    """REINFORCE leave-one-out baseline (Kool et al. 2019; Ahmadian et al. 2024, arXiv 2402.14740).

    ``A_pi = r_pi - (1 / (k - 1)) sum_{j != i} r_pj`` over the ``k`` valid samples of prompt ``p``
    (equivalently ``k / (k - 1) * (r_pi - mean_j r_pj)``). ``scores``/``valid`` ``(P, n)``; groups
    with fewer than 2 valid samples and invalid samples get 0. Returns ``(P, n)``.
    """
    v = valid.to(scores.dtype)
    s = torch.where(valid, scores, torch.zeros_like(scores))
    k = v.sum(-1, keepdim=True)
    others = (s.sum(-1, keepdim=True) - s) / (k - 1).clamp(min=1)
    return (s - others) * v * (k >= 2).to(scores.dtype)


def kl_penalty(logps: Tensor, ref_logps: Tensor, estimator: str = "k1") -> Tensor:
    """Per-token estimators of ``KL(pi || pi_ref)`` from samples of ``pi`` (Schulman 2020, "Approximating KL").

    With ``log_r = logp_ref - logp``: ``k1 = -log_r`` (unbiased, can be negative), ``k2 = log_r^2 / 2``,
    ``k3 = exp(log_r) - 1 - log_r`` (unbiased, always >= 0; GRPO's choice). All are 0 when
    ``logp == logp_ref``. Shapes ``(B, L)`` -> ``(B, L)``; gradients flow through ``logps``.
    """
    log_r = ref_logps - logps
    if estimator == "k1":
        return -log_r
    if estimator == "k2":
        return 0.5 * log_r**2
    if estimator == "k3":
        return torch.exp(log_r) - 1.0 - log_r
    raise ValueError(f"unknown KL estimator {estimator!r}; choose k1, k2 or k3")


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy ``H = -sum_v p_v log p_v`` of ``softmax(logits)`` over the last axis, in float32.

    ``(..., V)`` -> ``(...)``; computed as ``logsumexp(z) - sum_v p_v z_v`` (stable for large logits).
    """
    z = logits.float()
    p = torch.softmax(z, dim=-1)
    return torch.logsumexp(z, dim=-1) - (p * z).sum(-1)


def whiten(values: Tensor, mask: Tensor, mean: Tensor, std: Tensor, shift_mean: bool = True,
           eps: float = 1e-8) -> Tensor:
    """``(x - mean) / (std + eps)`` on masked-in entries (0 elsewhere), with *given* statistics.

    The statistics are passed in so the caller can compute them over the whole step across
    processes (:func:`moments`); ``shift_mean=False`` only rescales. ``(B, L)`` -> ``(B, L)``.
    """
    out = (values - mean) if shift_mean else values
    return out / (std + eps) * mask.to(values.dtype)


def moments(total: Tensor, total_sq: Tensor, count: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and (population) std from a sum, a sum of squares and a count (e.g. all-reduced)."""
    mean = total / count.clamp(min=1)
    var = (total_sq / count.clamp(min=1) - mean**2).clamp(min=0)
    return mean, var.sqrt()


def update_running_moments(count: float, mean: float, m2: float, batch: Tensor) -> tuple[float, float, float]:
    """Merge a batch into running ``(count, mean, M2)`` (Chan et al. 1979 parallel variance).

    ``std = sqrt(M2 / count)``. Pure and deterministic, so the state is three floats that a
    checkpoint stores exactly (ChatGLM-RLHF's reward normalisation keeps such running statistics).
    """
    x = batch.detach().double().flatten()
    n_b = x.numel()
    if n_b == 0:
        return count, mean, m2
    mean_b = float(x.mean())
    m2_b = float(((x - mean_b) ** 2).sum())
    n = count + n_b
    delta = mean_b - mean
    return n, mean + delta * n_b / n, m2 + m2_b + delta**2 * count * n_b / n


def normalize_rewards(scores: Tensor, mean: float, std: float, clip: float | None,
                      shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """ChatGLM-RLHF reward normalisation: ``clip((r - mu) / sigma, -c, c)`` with running ``mu, sigma``.

    ``shift_mean=False`` divides by ``sigma`` only (keeps the sign of a reference-baseline reward).
    ``(B,)`` -> ``(B,)``; ``clip=None`` disables clipping.
    """
    out = ((scores - mean) if shift_mean else scores) / (std + eps)
    return out if clip is None else out.clamp(-clip, clip)


def shaped_token_rewards(scores: Tensor, kl: Tensor, mask: Tensor, kl_coef: float) -> Tensor:
    """Per-token rewards of RLHF PPO (Ziegler et al. 2019; Ouyang et al. 2022, Eq. 2).

    ``r_t = -beta * kl_t`` on every response token, plus the sequence score on its last token.
    ``scores`` ``(B,)``, ``kl``/``mask`` ``(B, L)`` with a left-aligned prefix mask. Returns ``(B, L)``.
    """
    m = mask.to(kl.dtype)
    rewards = -kl_coef * kl.detach() * m
    last = (m.sum(-1).long() - 1).clamp(min=0)
    has = m.sum(-1) > 0
    bonus = torch.zeros_like(rewards)
    bonus[torch.arange(rewards.shape[0]), last] = torch.where(has, scores.to(rewards.dtype), 0.0)
    return rewards + bonus


def group_advantages_with_kl(seq_adv: Tensor, kl: Tensor, mask: Tensor, kl_coef: float) -> Tensor:
    """Per-token advantages of a group baseline (GRPO / RLOO) with the KL penalty in the reward.

    ``A_t = A_seq - beta * sum_{s >= t} kl_s``: the sequence advantage ``seq_adv`` ``(B,)`` (already
    normalised within its group, so the KL is *not* divided by the group's reward spread) plus the return-to-go
    (gamma = 1) of the per-token rewards ``-beta * kl_t``, as OpenRLHF's ``group_norm`` / ``rloo`` estimators
    do (``compute_reward`` after the group normalisation, then cumulative returns). ``kl``/``mask`` ``(B, L)``,
    left-aligned prefix mask; returns ``(B, L)``, 0 off-mask, no gradient.
    """
    rewards = shaped_token_rewards(seq_adv, kl, mask, kl_coef)
    adv, _ = gae(rewards, torch.zeros_like(rewards), mask, gamma=1.0, lam=1.0)
    return adv


def explained_variance(values: Tensor, returns: Tensor, mask: Tensor) -> Tensor:
    """``1 - Var[R - V] / Var[R]`` over masked-in tokens (1: perfect critic, <= 0: no better than a constant)."""
    m = mask.to(values.dtype)
    n = m.sum().clamp(min=1)

    def var(x: Tensor) -> Tensor:
        mu = (x * m).sum() / n
        return (((x - mu) ** 2) * m).sum() / n

    return 1.0 - var(returns - values) / var(returns).clamp(min=1e-12)
