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
    from alignkit.data.verifiable import DEMO_HELDOUT
    from alignkit.generate.engine import HFEngine
    from alignkit.train.rl_rollout import Sample
    from alignkit.train.rl_setup import build_run
    from alignkit.train.run import make_accelerator

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


def _rl_run(tmp_path, model_dir, out, **kw):
    from alignkit.data.verifiable import DEMO_HELDOUT

    base = {"model.name_or_path": model_dir, "data.train": str(DEMO_HELDOUT), "rollout.prompts_per_step": 2,
            "rollout.n": 2, "rollout.max_new_tokens": 4, "train.max_steps": 3, "train.save_every": 1,
            "train.keep_checkpoints": 5, "train.lr": 1e-3, "critic.lr": 1e-3, "ppo.micro_batch_size": 2,
            "reward.verifier": "tests.train.rl_fakes:varied", "train.output_dir": str(out),
            "train.progress": "false", "train.report": "false"}
    return _rl_cfg(**{**base, **kw})


def _simulate_kill_after_logging_step_3(out) -> list[str]:
    """As if SIGKILL came after step 3 was logged and while a line was being written, before the step-3
    checkpoint: the last checkpoint is step 2, metrics.jsonl holds steps 1-3 and a torn line."""
    import shutil

    shutil.rmtree(out / "checkpoints" / "step-0000003")
    lines = (out / "metrics.jsonl").read_text().splitlines(keepends=True)
    with open(out / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 4, "loss": 0.1')
    return lines


def _without_times(line: str) -> dict:
    import json

    return {k: v for k, v in json.loads(line).items() if not k.startswith(("time/", "elapsed"))}


def test_rl_resume_keeps_metrics_and_appends(tmp_path, tiny_model_dir):
    """--resume keeps metrics.jsonl up to the checkpoint it resumes from (those lines untouched), drops what the
    killed run logged after it (a torn last line included) and appends: the log equals the uninterrupted run's.
    Before, a torn line stopped the resume (JSONDecodeError)."""
    from alignkit.train.rl import train_rl

    out = tmp_path / "rl"
    cfg = _rl_run(tmp_path, tiny_model_dir, out)
    train_rl(cfg)
    lines = _simulate_kill_after_logging_step_3(out)
    assert len(lines) == 3
    summary = train_rl(cfg, resume=True)
    after = (out / "metrics.jsonl").read_text().splitlines(keepends=True)
    assert summary["steps"] == 3 and after[:2] == lines[:2] and len(after) == 3
    assert _without_times(after[2]) == _without_times(lines[2])


def test_shared_loop_resume_keeps_metrics_like_rl(tmp_path, tiny_model_dir):
    """The offline recipes resume through the same code: no duplicate step-3 line (before: steps 1, 2, 3, 3)."""
    from tests.train.conftest import make_sft, write_jsonl

    from alignkit.config import load_config
    from alignkit.train.sft import SFTConfig, train_sft

    out = tmp_path / "sft"
    data = write_jsonl(tmp_path / "s.jsonl", make_sft(8))
    cfg = load_config(SFTConfig, None, [f"model.name_or_path={tiny_model_dir}", f"data.train={data}",
                                        f"train.output_dir={out}", "train.progress=false", "train.report_to=[]",
                                        "train.precision=fp32", "train.max_steps=3", "train.save_every=1",
                                        "train.keep_checkpoints=5", "train.batch_size=2"])
    train_sft(cfg)
    lines = _simulate_kill_after_logging_step_3(out)
    train_sft(cfg, resume=True)
    after = (out / "metrics.jsonl").read_text().splitlines(keepends=True)
    assert after[:2] == lines[:2] and len(after) == 3
    assert _without_times(after[2]) == _without_times(lines[2])


def test_rl_optimizer_step_when_deepspeed_reports_no_norm():
    """Under DeepSpeed ``accelerator.clip_grad_norm_`` clips inside the engine and returns None: the RL update
    steps like the shared loop does (before: ``float(None)``, TypeError)."""
    from alignkit.train.rl_update import _optimizer_step

    model = torch.nn.Linear(2, 1)
    model(torch.ones(1, 2)).sum().backward()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    before = model.weight.detach().clone()
    acc = SimpleNamespace(clip_grad_norm_=lambda params, max_norm: None, num_processes=1,
                          device=torch.device("cpu"))
    ctx = SimpleNamespace(acc=acc, policy=model, opt=opt, sched=sched, critic=None, critic_opt=None,
                          critic_sched=None, cfg=_rl_cfg(), state=SimpleNamespace(step=0, opt_steps=0))
    _optimizer_step(ctx)
    assert ctx.state.opt_steps == 1 and not torch.equal(model.weight, before)


def test_rl_train_section_is_the_shared_train_config(tmp_path):
    """One declaration of the train keys: RLTrainConfig is TrainConfig with RL's defaults (every key a config
    or override used before still loads); the offline data-loop keys are refused, and the resolved config saved
    in a run directory loads again."""
    from alignkit.config import dump_config, load_config
    from alignkit.errors import ConfigError
    from alignkit.train.loop import TrainConfig
    from alignkit.train.rl import RLConfig
    from alignkit.train.rl_config import RLTrainConfig

    assert issubclass(RLTrainConfig, TrainConfig)
    own = set(vars(RLTrainConfig).get("__annotations__", {}))  # the fields its class body declares
    assert own <= {"output_dir", "max_steps", "lr", "schedule", "max_grad_norm", "report",
                   "epochs", "batch_size", "grad_accum", "eval_every"}
    keys = {"output_dir": "o", "seed": 1, "max_steps": 3, "lr": 1e-5, "weight_decay": 0.1, "adam_betas": "[0.9,0.95]",
            "adam_eps": 1e-6, "schedule": "cosine", "warmup_steps": 1, "max_grad_norm": "null", "precision": "fp32",
            "log_every": 2, "save_every": 1, "keep_checkpoints": 1, "report_to": "[]", "progress": "false",
            "report": "false"}
    cfg = _rl_cfg(**{f"train.{k}": v for k, v in keys.items()})
    assert cfg.train.max_steps == 3 and cfg.train.adam_betas == [0.9, 0.95] and cfg.train.report is False
    default = _rl_cfg().train
    assert (default.output_dir, default.max_steps, default.lr, default.schedule) == ("runs/rl", 10, 1e-6, "constant")
    for key in ("batch_size", "grad_accum", "epochs"):
        with pytest.raises(ConfigError, match=f"train.{key} is not used by alignkit rl"):
            _rl_cfg(**{f"train.{key}": 2})
    dump_config(cfg, tmp_path / "config.yaml")
    assert load_config(RLConfig, tmp_path / "config.yaml") == cfg
