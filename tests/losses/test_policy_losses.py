"""Policy-optimisation maths on hand-computed tensors."""

import math

import pytest
import torch

from alignkit.losses import policy as P


def test_gae_hand_computed():
    # one sequence of 3 tokens, gamma=0.9, lam=0.8; V after the end is 0
    r = torch.tensor([[0.0, 0.0, 1.0]])
    v = torch.tensor([[0.5, 0.4, 0.3]])
    m = torch.ones(1, 3, dtype=torch.bool)
    adv, ret = P.gae(r, v, m, gamma=0.9, lam=0.8)
    d2 = 1.0 - 0.3
    d1 = 0.0 + 0.9 * 0.3 - 0.4
    d0 = 0.0 + 0.9 * 0.4 - 0.5
    a2 = d2
    a1 = d1 + 0.72 * a2
    a0 = d0 + 0.72 * a1
    assert torch.allclose(adv, torch.tensor([[a0, a1, a2]]), atol=1e-6)
    assert torch.allclose(ret, torch.tensor([[a0 + 0.5, a1 + 0.4, a2 + 0.3]]), atol=1e-6)


def test_gae_padding_is_ignored():
    # a padded row equals the same row computed alone
    r = torch.tensor([[0.0, 2.0, 9.0], [0.0, 0.0, 1.0]])
    v = torch.tensor([[0.1, 0.2, 7.0], [0.5, 0.4, 0.3]])
    m = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    adv, ret = P.gae(r, v, m, gamma=1.0, lam=1.0)
    # gamma = lam = 1: A_t = sum_{s>=t} r_s - V_t
    assert torch.allclose(adv[0], torch.tensor([2.0 - 0.1, 2.0 - 0.2, 0.0]), atol=1e-6)
    assert ret[0, 2] == 0 and torch.allclose(ret[0, :2], torch.tensor([2.0, 2.0]))
    assert torch.allclose(adv[1], torch.tensor([1 - 0.5, 1 - 0.4, 1 - 0.3]), atol=1e-6)


def test_group_advantages_hand_computed():
    s = torch.tensor([[1.0, 0.0, 0.0, 1.0], [3.0, 1.0, 2.0, 0.0]])
    valid = torch.ones_like(s, dtype=torch.bool)
    a = P.group_advantages(s, valid, eps=0.0)
    std0 = math.sqrt(4 * 0.25 / 3)  # Bessel: sum (x - 0.5)^2 = 1, / 3
    assert torch.allclose(a[0], torch.tensor([0.5, -0.5, -0.5, 0.5]) / std0, atol=1e-6)
    std1 = math.sqrt((2.25 + 0.25 + 0.25 + 2.25) / 3)
    assert torch.allclose(a[1], torch.tensor([1.5, -0.5, 0.5, -1.5]) / std1, atol=1e-6)
    assert torch.allclose(P.group_advantages(s, valid, scale=False)[1], torch.tensor([1.5, -0.5, 0.5, -1.5]))


def test_group_advantages_skip_invalid_samples():
    s = torch.tensor([[1.0, 123.0, 0.0], [5.0, 0.0, 0.0]])
    valid = torch.tensor([[True, False, True], [True, False, False]])
    a = P.group_advantages(s, valid, scale=False)
    assert torch.equal(a, torch.tensor([[0.5, 0.0, -0.5], [0.0, 0.0, 0.0]]))


def test_rloo_hand_computed():
    s = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    a = P.rloo_advantages(s, torch.ones_like(s, dtype=torch.bool))
    # 1 - mean(0, 0, 1) = 2/3 ; 0 - mean(1, 0, 1) = -2/3
    assert torch.allclose(a, torch.tensor([[2 / 3, -2 / 3, -2 / 3, 2 / 3]]))
    a = P.rloo_advantages(s, torch.tensor([[True, True, False, False]]))
    assert torch.allclose(a, torch.tensor([[1.0, -1.0, 0.0, 0.0]]))


def test_ppo_loss_at_ratio_one_is_minus_advantage_and_gradient_is_policy_gradient():
    torch.manual_seed(0)
    logp = torch.randn(3, 5, requires_grad=True)
    adv = torch.randn(3, 5)
    mask = torch.rand(3, 5) > 0.3
    per_tok, metrics = P.ppo_policy_loss(logp, logp.detach(), adv, mask, clip_eps=0.2)
    n = float(mask.sum())
    loss = P.global_token_loss(per_tok, mask, n)
    assert torch.allclose(loss, -(adv * mask).sum() / n)
    assert torch.allclose(metrics["ratio"], torch.ones(3, 5))
    loss.backward()
    # autograd of the unclipped form -mean(exp(logp - logp_old) * A)
    ref = logp.detach().clone().requires_grad_(True)
    (-(torch.exp(ref - ref.detach()) * adv * mask).sum() / n).backward()
    assert torch.allclose(logp.grad, ref.grad) and torch.allclose(logp.grad, -adv * mask / n)


def test_ppo_clipping():
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.5, 0.5]]))
    old = torch.zeros(1, 4)
    adv = torch.tensor([[1.0, -1.0, -1.0, 1.0]])
    per_tok, m = P.ppo_policy_loss(logp, old, adv, torch.ones(1, 4, dtype=torch.bool), clip_eps=0.2)
    # A>0, r=1.5 -> clipped 1.2 ; A<0, r=0.5 -> clipped 0.8 ; other two unclipped
    assert torch.allclose(per_tok, torch.tensor([[-1.2, 0.8, 1.5, -0.5]]))
    assert m["clipped"].tolist() == [[1.0, 1.0, 0.0, 0.0]]


def test_value_loss_clipped():
    v = torch.tensor([[1.0, 0.0]])
    old = torch.tensor([[0.0, 0.0]])
    ret = torch.tensor([[2.0, 1.0]])
    loss, m = P.value_loss(v, old, ret, torch.ones(1, 2, dtype=torch.bool), clip_eps=0.5)
    # token 0: plain (1-2)^2=1, clipped (0.5-2)^2=2.25 -> max 2.25 ; token 1: both 1
    assert torch.allclose(loss, torch.tensor([[1.125, 0.5]]))
    plain, _ = P.value_loss(v, old, ret, torch.ones(1, 2, dtype=torch.bool), clip_eps=None)
    assert torch.allclose(plain, torch.tensor([[0.5, 0.5]]))


def test_kl_estimators():
    lp = torch.log(torch.tensor([0.5, 0.2]))
    ref = torch.log(torch.tensor([0.25, 0.2]))
    assert torch.allclose(P.kl_penalty(lp, ref, "k1"), torch.tensor([math.log(2), 0.0]))
    assert torch.allclose(P.kl_penalty(lp, ref, "k3"), torch.tensor([0.5 - 1 + math.log(2), 0.0]))
    assert torch.allclose(P.kl_penalty(lp, ref, "k2"), torch.tensor([0.5 * math.log(2) ** 2, 0.0]))
    with pytest.raises(ValueError, match="k1, k2 or k3"):
        P.kl_penalty(lp, ref, "k9")


def test_entropy():
    assert torch.allclose(P.entropy_from_logits(torch.zeros(2, 4)), torch.full((2,), math.log(4)))
    assert P.entropy_from_logits(torch.tensor([[1e4, 0.0, 0.0]])).abs().item() < 1e-4


def test_accumulation_invariant_4x1_equals_1x4():
    """Sum of micro-batch losses divided by the GLOBAL count == the full-batch loss, and same gradient."""
    torch.manual_seed(1)
    logp = torch.randn(4, 6, dtype=torch.float64)
    old = logp + 0.1 * torch.randn(4, 6, dtype=torch.float64)
    adv = torch.randn(4, 6, dtype=torch.float64)
    lengths = torch.tensor([6, 1, 3, 5])
    mask = torch.arange(6)[None, :] < lengths[:, None]

    def run(splits):
        x = logp.clone().requires_grad_(True)
        n = float(mask.sum())
        total = 0.0
        for rows in splits:
            per_tok, _ = P.ppo_policy_loss(x[rows], old[rows], adv[rows], mask[rows], 0.2)
            loss = P.global_token_loss(per_tok, mask[rows], n)
            loss.backward()
            total += float(loss.detach())
        return total, x.grad

    one, g1 = run([[0, 1, 2, 3]])
    four, g4 = run([[0], [1], [2], [3]])
    assert abs(one - four) < 1e-12 and torch.allclose(g1, g4, atol=1e-12)
    # the per-micro-batch mean (the bug class) gives another number
    naive = sum(float(P.masked_mean(P.ppo_policy_loss(logp[[i]], old[[i]], adv[[i]], mask[[i]])[0], mask[[i]]))
                for i in range(4)) / 4
    assert abs(naive - one) > 1e-3


def test_sequence_level_reduction():
    per_tok = torch.tensor([[1.0, 3.0, 0.0], [5.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    assert P.global_sequence_loss(per_tok, mask, 2).item() == pytest.approx((2.0 + 5.0) / 2)
    assert P.global_token_loss(per_tok, mask, 3).item() == pytest.approx(9.0 / 3)
    with pytest.raises(ValueError):
        P.global_token_loss(per_tok, mask, 0)


def test_running_moments_match_batch_statistics_and_normalisation():
    x = torch.tensor([1.0, 2.0, 4.0, 8.0, -3.0])
    state = (0.0, 0.0, 0.0)
    for chunk in (x[:2], x[2:3], x[3:]):
        state = P.update_running_moments(*state, chunk)
    n, mean, m2 = state
    assert n == 5 and mean == pytest.approx(float(x.mean())) and m2 / n == pytest.approx(float(x.var(unbiased=False)))
    out = P.normalize_rewards(torch.tensor([mean + 10 * math.sqrt(m2 / n), mean]), mean, math.sqrt(m2 / n), clip=3.0)
    assert out.tolist() == pytest.approx([3.0, 0.0])


def test_shaped_token_rewards_put_score_on_last_token():
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.5, 0.5, 0.5]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    r = P.shaped_token_rewards(torch.tensor([2.0, -1.0]), kl, mask, kl_coef=0.5)
    assert torch.allclose(r, torch.tensor([[-0.05, 1.9, 0.0], [-0.25, -0.25, -1.25]]))


def test_explained_variance():
    ret = torch.tensor([[1.0, 2.0, 3.0]])
    m = torch.ones(1, 3, dtype=torch.bool)
    assert P.explained_variance(ret, ret, m).item() == pytest.approx(1.0)
    assert P.explained_variance(torch.full((1, 3), 2.0), ret, m).item() == pytest.approx(0.0)


def test_group_advantages_with_kl_adds_the_kl_return_to_go_after_the_group_normalisation():
    """A_t = A_seq - beta * sum_{s >= t} kl_s on the masked-in prefix, 0 off-mask (hand-computed)."""
    seq_adv = torch.tensor([1.0, -1.0])
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 9.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    adv = P.group_advantages_with_kl(seq_adv, kl, mask, kl_coef=0.5)
    expected = torch.tensor([[1.0 - 0.5 * 0.6, 1.0 - 0.5 * 0.5, 1.0 - 0.5 * 0.3],
                             [-1.0 - 0.5 * 0.9, -1.0 - 0.5 * 0.5, 0.0]])
    assert torch.allclose(adv, expected, atol=1e-6)


def test_kl_loss_term_gradients_on_policy():
    """What each estimator's gradient descends when differentiated as a loss on samples of pi (exact
    expectation over a 6-token categorical, Tang & Munos 2025, arXiv 2506.09477): k1 -> 0 (E_pi[grad log pi]
    = 0, why ``kl.mode: loss`` refuses it), k2 -> grad KL(pi || ref), k3 -> grad KL(ref || pi)."""
    torch.manual_seed(0)
    theta = torch.randn(6, dtype=torch.float64, requires_grad=True)
    ref = torch.log_softmax(torch.randn(6, dtype=torch.float64), -1)

    def expected_grad(estimator):
        logp = torch.log_softmax(theta, -1)
        (g,) = torch.autograd.grad((logp.exp().detach() * P.kl_penalty(logp, ref, estimator)).sum(), theta)
        return g

    def grad_of(divergence):
        (g,) = torch.autograd.grad(divergence(torch.log_softmax(theta, -1)), theta)
        return g

    reverse = grad_of(lambda lp: (lp.exp() * (lp - ref)).sum())
    forward = grad_of(lambda lp: (ref.exp() * (ref - lp)).sum())
    assert expected_grad("k1").abs().max() < 1e-12 and reverse.abs().max() > 1e-2
    assert torch.allclose(expected_grad("k2"), reverse, atol=1e-12)
    assert torch.allclose(expected_grad("k3"), forward, atol=1e-12)
    assert not torch.allclose(forward, reverse, atol=1e-3)
