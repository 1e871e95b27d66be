"""The RL audit's bugs (issue 16), each pinned by a test that failed before its fix: KL-in-reward with group
advantages, the KL estimator of ``kl.mode: loss``, a failed reference-baseline reward, the running-std floor,
and resume keeping metrics.jsonl."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch


def _rl_cfg(**kw):
    from alignkit.config import load_config
    from alignkit.train.rl import RLConfig

    base = {"data.train": "unused.jsonl", "train.precision": "fp32", "train.report_to": "[]"}
    base.update(kw)
    return load_config(RLConfig, None, [f"{k}={v}" for k, v in base.items()])


def _group_tensors(n: int, length: int, kl_per_token: float) -> dict[str, torch.Tensor]:
    old = torch.full((n, length), -1.0)
    return {"resp_mask": torch.ones(n, length, dtype=torch.bool), "old_logps": old,
            "ref_logps": old - kl_per_token * torch.arange(1, n + 1, dtype=torch.float32)[:, None]}


@pytest.mark.parametrize("adv", ["grpo", "rloo"])
def test_kl_in_reward_is_not_divided_by_the_group_spread(adv):
    """An all-pass group (4 samples, reward 1.0) with a small KL: the advantages are the KL penalty
    (-beta * KL summed from each token to the end), O(beta * KL) -- not the O(1) noise of normalising
    ``score - beta * KL`` by the group's std (the bug: [0.15, -1.02, 1.32, -0.44]-like advantages)."""
    from alignkit.train import rl

    beta, kl, length = 0.05, 1e-3, 3
    cfg = _rl_cfg(**{"advantage.type": adv, "critic": "null", "kl.mode": "reward", "kl.coef": beta})
    ctx = SimpleNamespace(cfg=cfg, acc=SimpleNamespace(device=torch.device("cpu"), num_processes=1))
    t = _group_tensors(4, length, kl)
    rl.advantages(ctx, t, torch.ones(4))
    kl_tok = (t["old_logps"] - t["ref_logps"])  # k1 per token
    to_go = kl_tok.flip(-1).cumsum(-1).flip(-1)  # sum_{s >= t} kl_s
    assert t["adv"].abs().max() <= beta * kl_tok.sum(-1).max() + 1e-7
    assert torch.allclose(t["adv"], -beta * to_go, atol=1e-7)
    assert t["mask"].all()


def test_kl_estimator_default_follows_the_mode_and_k1_loss_is_refused():
    """kl.mode=loss defaults to k3 (k1 as a loss has zero expected gradient on-policy); reward keeps k1;
    an estimator the mode would not use is refused."""
    from alignkit.errors import ConfigError

    assert _rl_cfg(**{"kl.mode": "loss"}).kl.estimator == "k3"
    assert _rl_cfg(**{"kl.mode": "reward"}).kl.estimator == "k1"
    assert _rl_cfg(**{"kl.mode": "loss", "kl.estimator": "k2"}).kl.estimator == "k2"
    with pytest.raises(ConfigError, match="zero expected gradient"):
        _rl_cfg(**{"kl.mode": "loss", "kl.estimator": "k1"})
    with pytest.raises(ConfigError, match="in-reward penalty is k1"):
        _rl_cfg(**{"kl.mode": "reward", "kl.estimator": "k3"})
