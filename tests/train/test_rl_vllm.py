"""`alignkit rl` with rollout.backend=vllm, against a fake ``vllm`` package (tests/generate/fake_vllm.py)
and a mocked CUDA check, on a tiny random model: refusals, a weight sync (+ prefix-cache reset) before
every generation carrying the current policy's (or, for y_ref, the reference's) parameters, and resume.
No real vLLM runs here."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from alignkit.data.verifiable import DEMO_HELDOUT
from alignkit.errors import ConfigError

QUIET = ["train.progress=false", "train.report_to=[]", "train.report=false"]


def _cfg(model_dir, out, **kw):
    from alignkit.config import load_config
    from alignkit.train.rl import RLConfig

    base = {"model.name_or_path": model_dir, "data.train": str(DEMO_HELDOUT), "rollout.backend": "vllm",
            "rollout.prompts_per_step": 2, "rollout.n": 2, "rollout.max_new_tokens": 4, "train.max_steps": 3,
            "train.lr": 1e-2, "advantage.type": "grpo", "critic": "null", "reward.normalize": "false",
            "reward.verifier": "tests.train.rl_fakes:varied", "reward.reference_baseline": "true",
            "ppo.micro_batch_size": 4, "train.output_dir": str(out)}
    base.update(kw)
    return load_config(RLConfig, None, [f"{k}={v}" for k, v in base.items()] + QUIET)


def _build(cfg, monkeypatch):
    """build_run with the fake vllm, CUDA reported present only while the engine is made."""
    from tests.generate.fake_vllm import install

    from alignkit.train.rl_setup import build_run
    from alignkit.train.run import make_accelerator

    install(monkeypatch)
    acc = make_accelerator("fp32")
    with monkeypatch.context() as m:
        m.setattr(torch.cuda, "is_available", lambda: True)
        return build_run(cfg, acc)


def _params(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_vllm_refused_with_the_reason(tmp_path, tiny_model_dir, monkeypatch):
    import sys

    from tests.generate.fake_vllm import install

    from alignkit.train.rl_setup import check_runtime

    cfg, one = _cfg(tiny_model_dir, tmp_path), SimpleNamespace(num_processes=1)
    monkeypatch.setitem(sys.modules, "vllm", None)  # not installed
    with pytest.raises(ConfigError, match="rollout.backend=vllm cannot be used here: the vllm package is not"):
        check_runtime(cfg, one)
    install(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="cannot be used here: no CUDA GPU is visible"):
        check_runtime(cfg, one)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    check_runtime(cfg, one)  # accepted
    with pytest.raises(ConfigError, match="2 processes .* are not supported"):
        check_runtime(cfg, SimpleNamespace(num_processes=2))
    with pytest.raises(ConfigError, match="model.lora .* is not supported"):
        _cfg(tiny_model_dir, tmp_path, **{"model.lora": "{r: 4}"})


def test_every_generation_first_receives_the_weights_it_names(tmp_path, tiny_model_dir, monkeypatch):
    """Step 1: sync(policy start) -> rollout, sync(reference) -> y_ref; step 2: sync(policy after the
    step-1 update) -> rollout. Each sync is followed by a prefix-cache reset; names and values are the
    model's own parameters."""
    from alignkit.train import rl

    ctx = _build(_cfg(tiny_model_dir, tmp_path / "r"), monkeypatch)
    policy = ctx.acc.unwrap_model(ctx.policy).model
    start, reference = _params(policy), _params(ctx.reference.model)
    events = ctx.engine.llm.events
    logs = rl.rl_step(ctx)
    after_1 = _params(policy)
    assert not _same(start, after_1)  # the update moved the policy, so a missed sync would show
    rl.rl_step(ctx)
    kinds = [e[0] for e in events]
    assert kinds[:9] == ["load", "reset", "generate", "load", "reset", "generate", "load", "reset", "generate"]
    for i, kind in enumerate(kinds):
        if kind == "generate":
            assert kinds[i - 2 : i] == ["load", "reset"], kinds
    assert events[2][2] == 1.0 and events[5][2] == 0.0  # the rollout samples, y_ref is greedy
    assert _same(events[0][1], start)
    assert _same(events[3][1], reference)
    assert _same(events[6][1], after_1)
    assert logs["time/weight_sync_s"] >= 0.0 and len(ctx.state.ref_rewards) == 4  # 2 new prompts per step


def test_first_rollout_after_resume_uses_the_resumed_weights(tmp_path, tiny_model_dir, monkeypatch):
    from alignkit.train import rl
    from alignkit.train.rl_setup import resume_run, save

    out = tmp_path / "run"
    out.mkdir()
    cfg = _cfg(tiny_model_dir, out, **{"reward.reference_baseline": "false"})
    first = _build(cfg, monkeypatch)
    rl.rl_step(first)
    save(first, out)
    saved = _params(first.acc.unwrap_model(first.policy).model)
    again = _build(cfg, monkeypatch)  # a new engine, built from the starting checkpoint
    resume_run(again, out)
    rl.rl_step(again)
    loads = [e[1] for e in again.engine.llm.events if e[0] == "load"]
    assert again.state.step == 2 and _same(loads[0], saved)


def test_reference_of_another_shape_refused_with_reference_baseline(tmp_path, tiny_model_dir, tokenizer,
                                                                     monkeypatch):
    from alignkit.models import tiny_random_causal_lm

    model, tok = tiny_random_causal_lm(tokenizer, hidden=16, layers=1, heads=2, seed=1)
    model.save_pretrained(tmp_path / "ref")
    tok.save_pretrained(tmp_path / "ref")
    cfg = _cfg(tiny_model_dir, tmp_path / "r", **{"reference.name_or_path": str(tmp_path / "ref")})
    with pytest.raises(ConfigError, match="reference model's parameters .* differ from the policy's"):
        _build(cfg, monkeypatch)
