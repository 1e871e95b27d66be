"""Loss maths on hand-written tensors: expected values computed by hand with ``math``, plus properties."""

from __future__ import annotations

import math

import pytest
import torch

from alignkit.losses import (
    chosen_nll_loss,
    dpo_loss,
    dpo_rw_loss,
    exo_loss,
    exo_pair_loss,
    ipo_loss,
    pref_log_targets,
)


def t(*values: float, grad: bool = False) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64, requires_grad=grad)


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


PAIR_LOSSES = [dpo_loss, ipo_loss, exo_pair_loss]


# Two pairs, each written out by hand:
#   pair 0: policy (-10, -14), ref (-11, -12): f_w = 1, f_l = -2, h = 3
#   pair 1: policy (-5, -4),   ref (-5, -5):   f_w = 0, f_l = 1,  h = -1
PC, PR, RC, RR = t(-10.0, -5.0), t(-14.0, -4.0), t(-11.0, -5.0), t(-12.0, -5.0)
H = [3.0, -1.0]


def test_dpo_hand_values_and_trl_metrics():
    loss, m = dpo_loss(PC, PR, RC, RR, beta=0.5)
    assert loss.shape == (2,)
    assert loss.tolist() == pytest.approx([-log_sigmoid(1.5), -log_sigmoid(-0.5)], abs=1e-12)
    assert m["rewards/chosen"].tolist() == pytest.approx([0.5, 0.0])
    assert m["rewards/rejected"].tolist() == pytest.approx([-1.0, 0.5])
    assert m["rewards/margins"].tolist() == pytest.approx([1.5, -0.5])
    assert m["rewards/accuracies"].tolist() == [1.0, 0.0]
    assert m["logps/chosen"].tolist() == [-10.0, -5.0]
    assert m["logps/rejected"].tolist() == [-14.0, -4.0]


def test_cdpo_label_smoothing_hand_values():
    loss, _ = dpo_loss(PC, PR, RC, RR, beta=0.5, label_smoothing=0.2)
    expected = [-0.8 * log_sigmoid(0.5 * h) - 0.2 * log_sigmoid(-0.5 * h) for h in H]
    assert loss.tolist() == pytest.approx(expected, abs=1e-12)


def test_identical_policy_and_reference_gives_ln2_exactly():
    pc, pr = torch.randn(5) * 30, torch.randn(5) * 30
    loss, m = dpo_loss(pc, pr, pc.clone(), pr.clone(), beta=0.37)
    assert torch.equal(loss, torch.full((5,), math.log(2.0)))
    assert torch.equal(m["rewards/margins"], torch.zeros(5))


def test_ipo_hand_values():
    loss, m = ipo_loss(PC, PR, RC, RR, tau=0.25)  # 1 / (2 tau) = 2
    assert loss.tolist() == pytest.approx([(3.0 - 2.0) ** 2, (-1.0 - 2.0) ** 2], abs=1e-12)
    assert m["rewards/chosen"].tolist() == pytest.approx([0.25, 0.0])  # tau plays beta's role in the metrics


def test_exo_pair_hand_values_match_trl_formula():
    beta, eps = 0.5, 1e-3
    loss, _ = exo_pair_loss(PC, PR, RC, RR, beta=beta, eps=eps)
    expected = []
    for h in H:
        z = beta * h
        expected.append(
            sigmoid(z) * (log_sigmoid(z) - math.log(1 - eps))
            + sigmoid(-z) * (log_sigmoid(-z) - math.log(eps))
        )
    assert loss.tolist() == pytest.approx(expected, abs=1e-12)
    # A Bernoulli KL: nonnegative, and zero exactly where p_theta(chosen) = 1 - eps.
    z_star = math.log((1 - eps) / eps)
    zero, _ = exo_pair_loss(t(z_star / beta), t(0.0), t(0.0), t(0.0), beta=beta, eps=eps)
    assert zero.item() == pytest.approx(0.0, abs=1e-12)


def test_exo_kway_hand_values_reward_setting():
    # One prompt, K = 3: f = (1, 0, -1), beta_pi = 1 -> p = softmax(1, 0, -1);
    # rewards (2, 1, 0) / beta_r = 2 -> q = softmax(1, 0.5, 0).
    policy, ref = t(-4.0, -6.0, -9.0).view(1, 3), t(-5.0, -6.0, -8.0).view(1, 3)
    rewards = t(2.0, 1.0, 0.0).view(1, 3)
    zp = [math.exp(1.0), math.exp(0.0), math.exp(-1.0)]
    zq = [math.exp(1.0), math.exp(0.5), math.exp(0.0)]
    p = [v / sum(zp) for v in zp]
    q = [v / sum(zq) for v in zq]
    kl = sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q, strict=True))
    loss, m = exo_loss(policy, ref, rewards, beta_pi=1.0, beta_r=2.0)
    assert loss.shape == (1,)
    assert loss.item() == pytest.approx(kl, abs=1e-12)
    cross_entropy = -sum(qi * math.log(pi) for pi, qi in zip(p, q, strict=True))
    loss_rw, _ = dpo_rw_loss(policy, ref, rewards, beta_pi=1.0, beta_r=2.0)
    assert loss_rw.item() == pytest.approx(cross_entropy, abs=1e-12)
    # Metrics: chosen = the reward argmax (index 0); rejected = mean over the others.
    assert m["rewards/chosen"].item() == pytest.approx(1.0)
    assert m["rewards/rejected"].item() == pytest.approx(-0.5)
    assert m["rewards/margins"].item() == pytest.approx(1.5)
    assert m["rewards/accuracies"].item() == 1.0
    assert m["logps/chosen"].item() == -4.0
    assert m["logps/rejected"].item() == pytest.approx(-7.5)
    assert m["p_policy/chosen"].item() == pytest.approx(p[0])


def test_kway_accuracy_is_strict_top1_agreement():
    # Target prefers candidate 2; the policy ties candidates 1 and 2 -> not an agreement.
    policy, ref = t(0.0, 1.0, 1.0).view(1, 3), torch.zeros(1, 3, dtype=torch.float64)
    _, m = exo_loss(policy, ref, t(0.0, 0.0, 5.0).view(1, 3))
    assert m["rewards/accuracies"].item() == 0.0
    _, m = exo_loss(policy, ref, t(0.0, 5.0, 0.0).view(1, 3))
    assert m["rewards/accuracies"].item() == 0.0
    _, m = exo_loss(t(0.0, 1.0, 2.0).view(1, 3), ref, t(0.0, 0.0, 5.0).view(1, 3))
    assert m["rewards/accuracies"].item() == 1.0


def test_exo_nonnegative_and_zero_at_the_target():
    gen = torch.Generator().manual_seed(0)
    policy = torch.randn(64, 4, generator=gen, dtype=torch.float64) * 5
    ref = torch.randn(64, 4, generator=gen, dtype=torch.float64) * 5
    rewards = torch.randn(64, 4, generator=gen, dtype=torch.float64) * 3
    loss, _ = exo_loss(policy, ref, rewards)
    assert (loss >= 0).all() and (loss > 1e-6).any()
    # p_theta = p_r when beta_pi * f = rewards / beta_r (+ any per-row constant).
    beta_pi, beta_r = 0.5, 0.25
    matched = ref + (rewards / beta_r) / beta_pi + torch.randn(64, 1, generator=gen, dtype=torch.float64)
    loss, _ = exo_loss(matched, ref, rewards, beta_pi=beta_pi, beta_r=beta_r)
    assert loss.abs().max().item() < 1e-12


def test_exo_k2_reward_setting_equals_exo_pair_with_reward_eps():
    # K = 2 with rewards (r_w, r_l): p_r = (sigma(d), sigma(-d)), d = (r_w - r_l) / beta_r,
    # so exo_loss == exo_pair_loss with beta = beta_pi and eps = sigma(-d).
    beta_pi, beta_r, r_w, r_l = 0.3, 0.5, 1.2, 0.4
    eps = sigmoid(-(r_w - r_l) / beta_r)
    policy, ref = torch.stack([PC, PR], dim=1), torch.stack([RC, RR], dim=1)
    rewards = t(r_w, r_l).expand(2, 2)
    kway, _ = exo_loss(policy, ref, rewards, beta_pi=beta_pi, beta_r=beta_r)
    pair, _ = exo_pair_loss(PC, PR, RC, RR, beta=beta_pi, eps=eps)
    torch.testing.assert_close(kway, pair, rtol=0, atol=1e-12)


def test_exo_pref_targets_equal_exo_pair_with_eps_sigmoid_minus_10():
    # Official exo-pref log-targets [0, -10] normalise to (1 - eps, eps) with eps = 1 / (1 + e^10).
    policy, ref = torch.stack([PC, PR], dim=1), torch.stack([RC, RR], dim=1)
    targets = pref_log_targets(2, dtype=torch.float64)
    assert targets.tolist() == [[0.0, -10.0], [0.0, -10.0]]
    kway, m_kway = exo_loss(policy, ref, log_targets=targets, beta_pi=0.5)
    pair, m_pair = exo_pair_loss(PC, PR, RC, RR, beta=0.5, eps=1.0 / (1.0 + math.exp(10.0)))
    torch.testing.assert_close(kway, pair, rtol=0, atol=1e-12)
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"):
        torch.testing.assert_close(m_kway[key], m_pair[key])
    # The official code's unnormalised target shifts its loss by the constant -log(1 + e^-10).
    official = (m_kway["p_policy/chosen"] * (torch.log(m_kway["p_policy/chosen"]) - 0.0)) + (
        1 - m_kway["p_policy/chosen"]
    ) * (torch.log(1 - m_kway["p_policy/chosen"]) + 10.0)
    torch.testing.assert_close(
        kway - official, torch.full((2,), math.log1p(math.exp(-10.0)), dtype=torch.float64)
    )


def test_dpo_rw_hard_labels_equal_dpo():
    gen = torch.Generator().manual_seed(1)
    pc, pr, rc, rr = (torch.randn(16, generator=gen, dtype=torch.float64) * 20 for _ in range(4))
    beta = 0.2
    rw, m_rw = dpo_rw_loss(
        torch.stack([pc, pr], 1),
        torch.stack([rc, rr], 1),
        beta_pi=beta,
        log_targets=pref_log_targets(16, float("-inf"), dtype=torch.float64),
    )
    dpo, m_dpo = dpo_loss(pc, pr, rc, rr, beta=beta)
    torch.testing.assert_close(rw, dpo, rtol=0, atol=1e-12)
    for key in (
        "rewards/chosen",
        "rewards/rejected",
        "rewards/margins",
        "rewards/accuracies",
        "logps/chosen",
    ):
        torch.testing.assert_close(m_rw[key], m_dpo[key])


def test_dpo_rw_is_forward_kl_plus_target_entropy():
    gen = torch.Generator().manual_seed(2)
    policy, ref, rewards = (torch.randn(8, 5, generator=gen, dtype=torch.float64) for _ in range(3))
    loss, _ = dpo_rw_loss(policy, ref, rewards, beta_pi=0.7, beta_r=0.3)
    log_p = torch.log_softmax(0.7 * (policy - ref), -1)
    log_q = torch.log_softmax(rewards / 0.3, -1)
    q = log_q.exp()
    torch.testing.assert_close(loss, (q * (log_q - log_p)).sum(-1) - (q * log_q).sum(-1))


@pytest.mark.parametrize("loss_fn", PAIR_LOSSES)
def test_pair_metrics_detached_and_losses_unreduced(loss_fn):
    args = [x.clone().requires_grad_(True) for x in (PC, PR, RC, RR)]
    loss, metrics = loss_fn(*args)
    assert loss.shape == (2,) and loss.grad_fn is not None
    assert metrics and all(
        v.grad_fn is None and not v.requires_grad and v.shape == (2,) for v in metrics.values()
    )


@pytest.mark.parametrize("loss_fn", [exo_loss, dpo_rw_loss])
def test_kway_metrics_detached(loss_fn):
    policy = torch.randn(3, 4, requires_grad=True)
    loss, metrics = loss_fn(policy, torch.randn(3, 4), torch.randn(3, 4, requires_grad=True))
    assert loss.shape == (3,) and loss.grad_fn is not None
    assert all(v.grad_fn is None and v.shape == (3,) for v in metrics.values())


EXTREME = [1e4, -1e4, 3e4, -3e4]


@pytest.mark.parametrize("loss_fn", PAIR_LOSSES)
def test_pair_losses_finite_values_and_gradients_for_extreme_inputs(loss_fn):
    pc = torch.tensor(EXTREME, requires_grad=True)
    loss, _ = loss_fn(pc, torch.zeros(4), torch.zeros(4), torch.zeros(4))
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(pc.grad).all()


@pytest.mark.parametrize("loss_fn", [exo_loss, dpo_rw_loss])
@pytest.mark.parametrize("targets", ["rewards", "pref"])
def test_kway_losses_finite_values_and_gradients_for_extreme_inputs(loss_fn, targets):
    # Rows 0/2 saturate on the preferred candidate, rows 1/3 on the other one.
    policy = torch.tensor([[1e4, -1e4], [-1e4, 1e4], [3e4, 0.0], [0.0, 3e4]], requires_grad=True)
    if targets == "rewards":
        kwargs, log_q_other = {"rewards": torch.tensor([[50.0, -50.0]] * 4)}, -200.0  # softmax(100, -100)
    else:
        kwargs, log_q_other = {"log_targets": pref_log_targets(4)}, -10.0 - math.log1p(math.exp(-10.0))
    loss, _ = loss_fn(policy, torch.zeros(4, 2), **kwargs)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(policy.grad).all()
    if loss_fn is exo_loss:
        # Reverse KL with p_theta = (0, 1): KL = -log q(other). Its gradient ~ p(1-p) truly vanishes
        # there (EXO is mode-seeking), so only finiteness is asserted for the gradient.
        assert loss[[1, 3]].tolist() == pytest.approx([-log_q_other] * 2, rel=1e-5)
        assert loss[[0, 2]].abs().max().item() < 1e-4
    else:
        # Cross-entropy keeps a unit-size gradient on the wrongly saturated rows (like DPO).
        assert loss[[1, 3]].tolist() == pytest.approx([1e4 * 0.5 * 2, 3e4 * 0.5], rel=1e-4)
        assert (policy.grad[[1, 3]].abs() > 0.4).all()


def test_gradient_direction_pushes_chosen_up():
    for loss_fn in PAIR_LOSSES:
        pc, pr = torch.zeros(1, requires_grad=True), torch.zeros(1, requires_grad=True)
        loss, _ = loss_fn(pc, pr, torch.zeros(1), torch.zeros(1))
        loss.sum().backward()
        assert pc.grad.item() < 0 < pr.grad.item(), loss_fn.__name__


def test_chosen_nll_is_per_token_mean():
    loss, m = chosen_nll_loss(t(-6.0, -1.5), torch.tensor([3, 1]))
    assert loss.tolist() == [2.0, 1.5]
    assert m["nll/chosen"].grad_fn is None


def test_refusals():
    two = torch.zeros(2)
    with pytest.raises(ValueError, match="1-D"):
        dpo_loss(torch.zeros(2, 1), two, two, two)
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(two, two, two, two, label_smoothing=0.5)
    with pytest.raises(ValueError, match="tau"):
        ipo_loss(two, two, two, two, tau=0.0)
    with pytest.raises(ValueError, match="eps"):
        exo_pair_loss(two, two, two, two, eps=0.0)
    kw = torch.zeros(2, 2)
    with pytest.raises(ValueError, match="exactly one"):
        exo_loss(kw, kw)
    with pytest.raises(ValueError, match="exactly one"):
        exo_loss(kw, kw, kw, log_targets=kw)
    with pytest.raises(ValueError, match="K>=2"):
        exo_loss(torch.zeros(2, 1), torch.zeros(2, 1), torch.zeros(2, 1))
    with pytest.raises(ValueError, match="finite log_epsilon"):
        exo_loss(kw, kw, log_targets=pref_log_targets(2, float("-inf")))
    with pytest.raises(ValueError, match="NaN"):
        dpo_rw_loss(kw, kw, torch.tensor([[0.0, float("nan")], [0.0, 0.0]]))
    with pytest.raises(ValueError, match=">= 1"):
        chosen_nll_loss(two, torch.tensor([1, 0]))


@pytest.mark.parametrize("loss_fn", [exo_loss, dpo_rw_loss])
def test_masked_candidate_contributes_nothing(loss_fn):
    """Rows with fewer than K candidates are padded; a padded one changes neither loss nor gradients."""
    g = torch.Generator().manual_seed(3)
    pol = torch.randn(2, 4, generator=g, dtype=torch.float64) * 5
    ref, rewards = torch.randn(2, 4, generator=g, dtype=torch.float64), torch.rand(2, 4, generator=g) * 10
    valid = torch.tensor([[True, True, True, False], [True, True, True, True]])
    pol[0, 3], ref[0, 3], rewards[0, 3] = 1e4, -1e4, 1e9  # garbage in the padded slot
    pol.requires_grad_(True)
    padded, m_pad = loss_fn(pol, ref, rewards.double(), beta_pi=0.7, beta_r=0.4, valid=valid)
    padded.sum().backward()
    assert pol.grad[0, 3].item() == 0.0 and torch.isfinite(pol.grad).all()
    pol3 = pol.detach()[:1, :3].clone().requires_grad_(True)
    alone, m_alone = loss_fn(pol3, ref[:1, :3], rewards[:1, :3].double(), beta_pi=0.7, beta_r=0.4)
    alone.sum().backward()
    torch.testing.assert_close(padded[0], alone[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(pol.grad[0, :3], pol3.grad[0], rtol=0, atol=1e-12)
    for name in ("rewards/rejected", "logps/rejected", "rewards/accuracies"):
        torch.testing.assert_close(m_pad[name][0], m_alone[name][0], rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="at least 2 real candidates"):
        loss_fn(pol, ref, rewards.double(), valid=torch.tensor([[True, False, False, False]] * 2))
