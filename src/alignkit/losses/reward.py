"""Reward-model losses: pure functions of scalar rewards returning ``(per_example_loss, metrics)``."""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional name
from torch import Tensor


def bradley_terry_loss(
    chosen_rewards: Tensor, rejected_rewards: Tensor, margin: Tensor | float | None = None
) -> tuple[Tensor, dict[str, Tensor]]:
    """Bradley-Terry pairwise loss (Ouyang et al. 2022, arXiv 2203.02155, Eq. 1; METHODS.md Appendix A).

    ``L = -log sigma(r_w - r_l - m)`` where ``r`` is the reward model's scalar score of a full
    (prompt, response) sequence and ``m`` an optional required margin (Llama 2, arXiv 2307.09288,
    Eq. 2): a float or a ``(B,)`` tensor, e.g. from annotator confidence. Shapes: ``(B,)`` rewards
    (squeeze a ``(B, 1)`` score head first); returns ``(B,)`` losses and detached ``(B,)`` metrics
    ``accuracy`` (``r_w > r_l``), ``margin`` (``r_w - r_l``) and ``rewards/chosen``/``rewards/rejected``
    (TRL's RewardTrainer names).
    """
    if chosen_rewards.dim() != 1 or rejected_rewards.shape != chosen_rewards.shape:
        raise ValueError(
            f"bradley_terry_loss takes two (B,) tensors; got {tuple(chosen_rewards.shape)}, {tuple(rejected_rewards.shape)}"
        )
    if isinstance(margin, Tensor) and margin.shape != chosen_rewards.shape:
        raise ValueError(
            f"margin must be a float or a {tuple(chosen_rewards.shape)} tensor, got {tuple(margin.shape)}"
        )
    diff = chosen_rewards - rejected_rewards
    loss = -F.logsigmoid(diff if margin is None else diff - margin)
    detached = diff.detach()
    return loss, {
        "accuracy": (detached > 0).to(detached.dtype),
        "margin": detached,
        "rewards/chosen": chosen_rewards.detach(),
        "rewards/rejected": rejected_rewards.detach(),
    }


def binary_reward_loss(scores: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """Binary cross-entropy on a scalar reward read as a logit (correct / incorrect responses).

    ``L = -[y log sigma(r) + (1 - y) log(1 - sigma(r))]`` for a response scored ``r`` with label
    ``y`` in [0, 1] (hard 0/1 labels, or soft Monte-Carlo estimates for process rewards).
    The correctness term of the multi-task reward model of "Does RLHF Scale?" (arXiv 2412.06000,
    METHODS.md §5.3). Shapes: ``(N,)`` scores and labels; returns ``(N,)`` losses and detached
    ``(N,)`` metrics ``bce/accuracy`` (``(r > 0) == (y > 0.5)``) and ``bce/prob`` (``sigma(r)``).
    """
    if scores.dim() != 1 or labels.shape != scores.shape:
        raise ValueError(f"binary_reward_loss takes two (N,) tensors; got {tuple(scores.shape)}, {tuple(labels.shape)}")
    y = labels.to(scores.dtype)
    loss = F.binary_cross_entropy_with_logits(scores, y, reduction="none")
    detached = scores.detach()
    return loss, {"bce/accuracy": ((detached > 0) == (y > 0.5)).to(detached.dtype), "bce/prob": detached.sigmoid()}


def multitask_reward_loss(
    chosen_rewards: Tensor, rejected_rewards: Tensor, scores: Tensor, labels: Tensor, alpha: float,
    margin: Tensor | float | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Multi-task reward loss: Bradley-Terry on pairs plus ``alpha`` x BCE on labelled single responses.

    ``L = [sum_pairs -log sigma(r_w - r_l) + alpha * sum_unpaired BCE(r, y)] / (P + U)``
    ("Does RLHF Scale?", arXiv 2412.06000, METHODS.md §5.3: one scalar head serves both terms).
    Every pair and every unpaired response is one unit, so the returned ``(P + U,)`` per-unit losses
    (pairs first) sum and normalise like every other loss in the shared loop. Shapes: ``(P,)``
    chosen/rejected rewards (P may be 0), ``(U,)`` scores and labels (U may be 0); ``margin`` as in
    :func:`bradley_terry_loss`.
    """
    bt, bt_metrics = bradley_terry_loss(chosen_rewards, rejected_rewards, margin=margin)
    bce, bce_metrics = binary_reward_loss(scores, labels)
    return torch.cat([bt, alpha * bce]), {**bt_metrics, **bce_metrics}


def aggregate_step_scores(step_probs: Tensor, mask: Tensor, how: str) -> Tensor:
    """One solution score from per-step correctness probabilities of a process reward model.

    ``min``: ``min_s p_s`` (a chain is as good as its weakest step); ``last``: ``p_S`` at the final
    step; ``prod``: ``prod_s p_s`` (probability every step is right, steps independent). Lightman et
    al. 2023 (arXiv 2305.20050) use ``prod``; Math-Shepherd (arXiv 2312.08935) uses ``min``.
    Shapes: ``(B, S)`` probabilities and a ``(B, S)`` bool mask of real steps (every row has at
    least one); returns ``(B,)``.
    """
    if step_probs.shape != mask.shape or step_probs.dim() != 2:
        raise ValueError(f"aggregate_step_scores takes two (B, S) tensors; got {tuple(step_probs.shape)}, {tuple(mask.shape)}")
    if not bool(mask.any(dim=1).all()):
        raise ValueError("every solution needs at least one step")
    if how == "min":
        return step_probs.masked_fill(~mask, float("inf")).min(dim=1).values
    if how == "last":
        last = mask.long().cumsum(dim=1).argmax(dim=1)  # index of the last real step
        return step_probs.gather(1, last[:, None]).squeeze(1)
    if how == "prod":
        return step_probs.masked_fill(~mask, 1.0).prod(dim=1)
    raise ValueError(f"unknown aggregation {how!r}; choose min, last or prod")
