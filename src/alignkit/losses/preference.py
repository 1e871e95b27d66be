"""Preference losses on sequence-level log-probabilities: DPO, cDPO, IPO, EXO (pairwise and K-way), DPO-rw.

Every function is pure: tensors in, ``(per_example_loss, metrics)`` out. ``per_example_loss`` has
shape ``(B,)`` and is NOT reduced (the training loop reduces with global counts so gradient
accumulation and data parallelism give the same result as one big batch). ``metrics`` maps names
to detached ``(B,)`` tensors; names follow TRL's DPOTrainer where TRL has one.

Inputs are summed response-token log-probs, ``log pi(y|x)`` (see ``alignkit.ops.response_logps``):
``(B,)`` for the pairwise losses, ``(B, K)`` for the K-way losses (candidate ``k`` of prompt ``b``).
Notation: ``f = log pi_theta(y|x) - log pi_ref(y|x)`` (the policy/reference log-ratio) and for a
pair ``h = f_chosen - f_rejected``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional name
from torch import Tensor

Metrics = dict[str, Tensor]


def _check_pairs(*tensors: Tensor) -> None:
    # (B,1) - (B,) broadcasts silently to (B,B); refuse anything but equal 1-D shapes.
    shape = tensors[0].shape
    if len(shape) != 1 or any(t.shape != shape for t in tensors):
        raise ValueError(
            f"these losses take 1-D (B,) tensors of one shape; got {[tuple(t.shape) for t in tensors]}"
        )


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value}")


def _pair_metrics(pc: Tensor, pr: Tensor, rc: Tensor, rr: Tensor, beta: float) -> Metrics:
    """TRL's DPO metrics: implicit rewards ``beta * f``, their margin and accuracy, policy log-probs."""
    chosen, rejected = (beta * (pc - rc)).detach(), (beta * (pr - rr)).detach()
    return {
        "rewards/chosen": chosen,
        "rewards/rejected": rejected,
        "rewards/margins": chosen - rejected,
        "rewards/accuracies": (chosen > rejected).to(chosen.dtype),
        "logps/chosen": pc.detach(),
        "logps/rejected": pr.detach(),
    }


def dpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
) -> tuple[Tensor, Metrics]:
    """Sigmoid DPO (Rafailov et al. 2023, arXiv 2305.18290, Eq. 7), with conservative label smoothing.

    ``L = -(1 - eps) * log sigma(beta * h) - eps * log sigma(-beta * h)``, ``h = f_w - f_l``.
    ``eps = label_smoothing`` is cDPO (Mitchell 2023): the label is assumed flipped with probability
    ``eps``; ``eps = 0`` is plain DPO. Inputs ``(B,)``; returns ``(B,)`` losses and TRL-named metrics
    (``rewards/chosen = beta * f_w`` etc.).
    """
    _check_pairs(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    _check_positive(beta=beta)
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    h = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    # logsigmoid, never log(sigmoid()): stays finite (and linear) for large |beta * h|.
    loss = -(1.0 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    return loss, _pair_metrics(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
    )


def ipo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    tau: float = 0.1,
) -> tuple[Tensor, Metrics]:
    """IPO (Azar et al. 2023, arXiv 2310.12036, Eq. 17): ``L = (h - 1 / (2 * tau))^2``, ``h = f_w - f_l``.

    The function uses whatever log-probs it is given. TRL length-normalises for IPO (it divides each
    log-ratio by the completion's token count, a choice it says the IPO authors confirmed); the
    ``dpo`` recipe does the same by default, passing ``logps / counts`` for policy and reference.
    Inputs ``(B,)``; metrics as for DPO with ``tau`` in place of ``beta``.
    """
    _check_pairs(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    _check_positive(tau=tau)
    h = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    loss = (h - 1.0 / (2.0 * tau)) ** 2
    return loss, _pair_metrics(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, tau
    )


def exo_pair_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float = 0.1,
    eps: float = 1e-3,
) -> tuple[Tensor, Metrics]:
    """EXO, pairwise closed form (Ji et al. 2024, arXiv 2402.00856, Eq. 16; TRL ``loss_type="exo_pair"``).

    The reverse KL between Bernoulli distributions ``KL(p_theta || p_eps)`` with
    ``p_theta = (sigma(beta*h), sigma(-beta*h))`` and target ``p_eps = (1 - eps, eps)``:
    ``L = sigma(beta*h) * (log sigma(beta*h) - log(1-eps)) + sigma(-beta*h) * (log sigma(-beta*h) - log eps)``.
    ``eps = 1e-3`` is TRL's default; the official code's ``log_epsilon = -10`` target is
    ``eps = sigmoid(-10) ~ 4.54e-5``. ``L >= 0``. Inputs ``(B,)``; metrics as for DPO.
    """
    _check_pairs(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    _check_positive(beta=beta)
    if not 0.0 < eps < 1.0:
        raise ValueError(f"eps must be in (0, 1), got {eps}")
    z = beta * ((policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps))
    # sigma(z) * logsigmoid(z) -> 0 * (-|z|) = 0 for large |z|: finite values and gradients.
    loss = torch.sigmoid(z) * (F.logsigmoid(z) - math.log1p(-eps)) + torch.sigmoid(-z) * (
        F.logsigmoid(-z) - math.log(eps)
    )
    return loss, _pair_metrics(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
    )


def pref_log_targets(
    batch_size: int,
    log_epsilon: float = -10.0,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Log-targets ``(B, 2)`` for a preference pair stacked as ``[chosen, rejected]``: rows ``[0, log_epsilon]``.

    Pass them as ``log_targets=`` to ``exo_loss`` / ``dpo_rw_loss``. ``log_epsilon = -10`` is the
    official EXO preference setting (``exo-pref``); ``log_epsilon = -inf`` gives the hard labels
    ``[1, 0]`` of the official ``dpo-pref`` (valid for ``dpo_rw_loss`` only: EXO's reverse KL to a
    hard label is infinite).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    row = torch.tensor([0.0, log_epsilon], device=device, dtype=dtype)
    return row.expand(batch_size, 2).clone()


def _kway_log_probs(
    policy_logps: Tensor,
    ref_logps: Tensor,
    rewards: Tensor | None,
    log_targets: Tensor | None,
    beta_pi: float,
    beta_r: float,
    valid: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Shared K-way set-up: returns ``(scores = beta_pi * f, log p_theta, log q)``, each ``(B, K)``.

    ``valid`` ``(B, K)`` bool marks real candidates; the others (padding of rows with fewer than K) get
    ``log p_theta = log q = -inf``, i.e. they are outside both distributions.
    """
    if policy_logps.dim() != 2 or policy_logps.shape[1] < 2 or ref_logps.shape != policy_logps.shape:
        raise ValueError(
            f"K-way losses take (B, K>=2) policy/ref log-probs; got {tuple(policy_logps.shape)}, {tuple(ref_logps.shape)}"
        )
    if (rewards is None) == (log_targets is None):
        raise ValueError(
            "give exactly one of `rewards` (reward setting) or `log_targets` (e.g. pref_log_targets)"
        )
    target = rewards if rewards is not None else log_targets
    if target.shape != policy_logps.shape:
        raise ValueError(
            f"targets must have the log-probs' shape {tuple(policy_logps.shape)}, got {tuple(target.shape)}"
        )
    _check_positive(beta_pi=beta_pi, beta_r=beta_r)
    if valid is None:
        valid = torch.ones_like(policy_logps, dtype=torch.bool)
    if valid.shape != policy_logps.shape or (valid.sum(-1) < 2).any():
        raise ValueError("`valid` must have the log-probs' shape and at least 2 real candidates per row")
    target = target.masked_fill(~valid, 0.0)
    if torch.isnan(target).any() or torch.isposinf(target).any() or not torch.isfinite(target).any(-1).all():
        raise ValueError("targets contain NaN/+inf or a row with no finite entry")
    scores = beta_pi * (policy_logps - ref_logps)
    # log_softmax also normalises unnormalised log-targets such as the official [0, -10].
    log_q = F.log_softmax((target / beta_r if rewards is not None else target).masked_fill(~valid, -math.inf), dim=-1)
    return scores, F.log_softmax(scores.masked_fill(~valid, -math.inf), dim=-1), log_q


def _kway_metrics(policy_logps: Tensor, scores: Tensor, log_p: Tensor, log_q: Tensor) -> Metrics:
    """K-way metrics: *chosen* is the target's most probable candidate (the first on ties), *rejected* the mean of the others.

    ``rewards/*`` are the policy's candidate scores ``beta_pi * f`` (``p_theta = softmax(scores)``);
    ``rewards/accuracies`` is 1 where the chosen candidate strictly has the top score (top-1 agreement).
    """
    scores, log_p, policy_logps = scores.detach(), log_p.detach(), policy_logps.detach()
    top = log_q.detach().argmax(dim=-1, keepdim=True)
    others = (1.0 - F.one_hot(top.squeeze(-1), scores.shape[-1]).to(scores.dtype)) * (log_p > -math.inf)  # real ones
    k_others = others.sum(-1)
    chosen, rejected = scores.gather(-1, top).squeeze(-1), (scores * others).sum(-1) / k_others
    best_other = scores.masked_fill(others == 0, float("-inf")).amax(-1)
    return {
        "rewards/chosen": chosen,
        "rewards/rejected": rejected,
        "rewards/margins": chosen - rejected,
        "rewards/accuracies": (chosen > best_other).to(scores.dtype),
        "logps/chosen": policy_logps.gather(-1, top).squeeze(-1),
        "logps/rejected": (policy_logps * others).sum(-1) / k_others,
        "p_policy/chosen": log_p.gather(-1, top).squeeze(-1).exp(),
    }


def exo_loss(
    policy_logps: Tensor,
    ref_logps: Tensor,
    rewards: Tensor | None = None,
    beta_pi: float = 0.5,
    beta_r: float = 0.5,
    *,
    log_targets: Tensor | None = None,
    valid: Tensor | None = None,
) -> tuple[Tensor, Metrics]:
    """EXO over K candidates (Ji et al. 2024, arXiv 2402.00856; METHODS.md section 2.3): reverse KL.

    ``p_theta = softmax_k(beta_pi * f_k)`` with ``f_k = log pi_theta(y_k|x) - log pi_ref(y_k|x)``;
    target ``log p_r = log_softmax_k(r_k / beta_r)`` from ``rewards`` (reward setting, ``exo-rw``), or
    ``log p_r = log_softmax(log_targets)`` (preference setting ``exo-pref``: ``pref_log_targets(B)``
    with the pair stacked ``[chosen, rejected]``; ``beta_r`` is then unused). ``valid`` ``(B, K)`` bool
    (optional) marks real candidates when rows have different K: padded ones are left out of both
    distributions and contribute exactly nothing.
    ``L = sum_k p_theta(k) * (log p_theta(k) - log p_r(k)) = KL(p_theta || p_r) >= 0``.
    The official code leaves the ``[0, -10]`` target unnormalised, which shifts its loss by the constant
    ``-log(1 + e^-10)``; gradients are identical. Effective KL coefficient: ``beta_r * beta_pi``.
    Shapes: ``policy_logps, ref_logps, rewards / log_targets`` ``(B, K)``; returns ``(B,)`` losses.
    """
    scores, log_p, log_q = _kway_log_probs(policy_logps, ref_logps, rewards, log_targets, beta_pi, beta_r, valid)
    real = log_p > -math.inf  # padded candidates: p = 0, and they contribute exactly 0 (value and gradient)
    if not torch.isfinite(log_q[real]).all():
        raise ValueError(
            "EXO needs targets with every candidate's probability > 0 (use a finite log_epsilon)"
        )
    loss = (log_p.exp() * (log_p.where(real, 0.0) - log_q.where(real, 0.0))).sum(dim=-1)
    return loss, _kway_metrics(policy_logps, scores, log_p, log_q)


def dpo_rw_loss(
    policy_logps: Tensor,
    ref_logps: Tensor,
    rewards: Tensor | None = None,
    beta_pi: float = 0.5,
    beta_r: float = 0.5,
    *,
    log_targets: Tensor | None = None,
    valid: Tensor | None = None,
) -> tuple[Tensor, Metrics]:
    """DPO over K candidates in EXO's framework (arXiv 2402.00856; METHODS.md section 2.4): forward KL.

    Cross-entropy ``L = -sum_k q(k) * log p_theta(k) = KL(q || p_theta) + H(q)`` with
    ``p_theta = softmax_k(beta_pi * f_k)`` and ``q = softmax_k(r_k / beta_r)`` (``dpo-rw``), or
    ``q = softmax(log_targets)``; ``pref_log_targets(B, float("-inf"))`` gives the hard labels ``[1, 0]``
    of ``dpo-pref``, for which ``L = -log sigma(beta_pi * (f_w - f_l))``, i.e. standard DPO with
    ``beta = beta_pi``. Shapes (and ``valid``) as for ``exo_loss``.
    """
    scores, log_p, log_q = _kway_log_probs(policy_logps, ref_logps, rewards, log_targets, beta_pi, beta_r, valid)
    # q = 0 entries (hard labels, padded candidates) contribute exactly 0.
    loss = -(log_q.exp() * log_p.where(log_p > -math.inf, 0.0)).sum(dim=-1)
    return loss, _kway_metrics(policy_logps, scores, log_p, log_q)


def chosen_nll_loss(policy_chosen_logps: Tensor, chosen_token_counts: Tensor) -> tuple[Tensor, Metrics]:
    """Auxiliary SFT term on the chosen response (LongReward arXiv 2410.21252; ChatGLM-Math arXiv 2404.02893).

    ``L = -log pi_theta(y_w|x) / |y_w|`` (per-token mean NLL of each chosen response), shapes ``(B,)``.
    A recipe adds ``weight * L`` to any preference loss (METHODS.md Appendix A:
    ``L_DPO + lambda * (-(lp_w) / |y_w|)``).
    """
    _check_pairs(policy_chosen_logps, chosen_token_counts)
    if (chosen_token_counts < 1).any():
        raise ValueError("chosen_token_counts must be >= 1 for every example (an empty response has no NLL)")
    loss = -policy_chosen_logps / chosen_token_counts.to(policy_chosen_logps.dtype)
    return loss, {"nll/chosen": loss.detach()}
