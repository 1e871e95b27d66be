"""Bradley-Terry reward loss: hand-computed values, margin, metrics, stability."""

from __future__ import annotations

import math

import pytest
import torch

from alignkit.losses import bradley_terry_loss


def test_hand_values_and_metrics():
    chosen = torch.tensor([2.0, 0.5], dtype=torch.float64, requires_grad=True)
    rejected = torch.tensor([1.0, 1.5], dtype=torch.float64)
    loss, m = bradley_terry_loss(chosen, rejected)
    # -log sigma(1) = log(1 + e^-1); -log sigma(-1) = log(1 + e^1)
    assert loss.tolist() == pytest.approx([math.log1p(math.exp(-1.0)), math.log1p(math.exp(1.0))], abs=1e-12)
    assert m["accuracy"].tolist() == [1.0, 0.0]
    assert m["margin"].tolist() == [1.0, -1.0]
    assert m["rewards/chosen"].tolist() == [2.0, 0.5]
    assert m["rewards/rejected"].tolist() == [1.0, 1.5]
    assert all(v.grad_fn is None for v in m.values())


def test_margin_float_and_tensor():
    chosen, rejected = torch.tensor([2.0, 3.0]), torch.tensor([1.0, 1.0])
    loss, m = bradley_terry_loss(chosen, rejected, margin=0.5)
    assert loss.tolist() == pytest.approx([math.log1p(math.exp(-0.5)), math.log1p(math.exp(-1.5))], abs=1e-6)
    loss, _ = bradley_terry_loss(chosen, rejected, margin=torch.tensor([1.0, 3.0]))
    assert loss.tolist() == pytest.approx([math.log(2.0), math.log1p(math.exp(1.0))], abs=1e-6)
    assert m["margin"].tolist() == [1.0, 2.0]  # the metric is the raw reward gap, margin not subtracted


def test_extreme_rewards_finite_gradients():
    chosen = torch.tensor([1e4, -1e4], requires_grad=True)
    loss, _ = bradley_terry_loss(chosen, torch.zeros(2))
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(chosen.grad).all()
    assert loss[1].item() == pytest.approx(1e4)


def test_refuses_broadcasting_shapes():
    with pytest.raises(ValueError, match=r"\(B,\)"):
        bradley_terry_loss(torch.zeros(3, 1), torch.zeros(3))
    with pytest.raises(ValueError, match="margin"):
        bradley_terry_loss(torch.zeros(3), torch.zeros(3), margin=torch.zeros(2))


def test_binary_and_multitask_hand_values():
    from alignkit.losses import binary_reward_loss, multitask_reward_loss

    scores = torch.tensor([0.0, 2.0, -1.0], dtype=torch.float64)
    labels = torch.tensor([1.0, 0.0, 0.25], dtype=torch.float64)
    loss, m = binary_reward_loss(scores, labels)
    # BCE(r, y) = log(1 + e^r) - y r
    expected = [math.log(2.0), math.log1p(math.exp(2.0)), math.log1p(math.exp(-1.0)) + 0.25]
    assert loss.tolist() == pytest.approx(expected, abs=1e-12)
    assert m["bce/accuracy"].tolist() == [0.0, 0.0, 1.0]
    chosen, rejected = torch.tensor([1.0], dtype=torch.float64), torch.tensor([0.0], dtype=torch.float64)
    total, mm = multitask_reward_loss(chosen, rejected, scores, labels, alpha=0.5)
    # units: the pair first, then alpha * each BCE term
    assert total.tolist() == pytest.approx([math.log1p(math.exp(-1.0))] + [0.5 * e for e in expected], abs=1e-12)
    assert float(total.sum() / 4) == pytest.approx((math.log1p(math.exp(-1.0)) + 0.5 * sum(expected)) / 4)
    assert mm["accuracy"].tolist() == [1.0] and "bce/prob" in mm
    # either part may be empty
    only_pairs, _ = multitask_reward_loss(chosen, rejected, torch.zeros(0, dtype=torch.float64),
                                          torch.zeros(0, dtype=torch.float64), alpha=1.0)
    assert only_pairs.shape == (1,)


def test_aggregate_step_scores():
    from alignkit.losses import aggregate_step_scores

    p = torch.tensor([[0.9, 0.5, 0.8], [0.7, 0.2, 0.0]])
    mask = torch.tensor([[True, True, True], [True, False, False]])
    assert aggregate_step_scores(p, mask, "min").tolist() == pytest.approx([0.5, 0.7])
    assert aggregate_step_scores(p, mask, "last").tolist() == pytest.approx([0.8, 0.7])
    assert aggregate_step_scores(p, mask, "prod").tolist() == pytest.approx([0.9 * 0.5 * 0.8, 0.7])
    with pytest.raises(ValueError, match="unknown aggregation"):
        aggregate_step_scores(p, mask, "mean")
    with pytest.raises(ValueError, match="at least one step"):
        aggregate_step_scores(p, torch.zeros_like(mask), "min")
