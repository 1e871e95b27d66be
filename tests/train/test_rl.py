"""`alignkit rl` on a tiny random model: refusals, first-step invariants, reference baseline, failing
rewards, accumulation and data-parallel invariance, exact resume after SIGKILL."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from alignkit.data.verifiable import DEMO_HELDOUT

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
QUIET = ["train.progress=false", "train.report_to=[]", "train.report=false"]


@pytest.fixture(scope="module")
def rl_model_dir(tmp_path_factory, tokenizer):
    """The tiny random Llama with sharpened logits: a random init gives a near-uniform next-token
    distribution (p ~ 2e-5 over 49k tokens) where ~1e-7 rounding differences between batch layouts move
    inverse-CDF draws to a neighbouring token on some CPUs; the invariance tests compare samples."""
    from alignkit.models import tiny_random_causal_lm

    model, tok = tiny_random_causal_lm(tokenizer, hidden=32, layers=2, heads=4, seed=0)
    with torch.no_grad():
        model.lm_head.weight.mul_(20.0)
    d = tmp_path_factory.mktemp("tiny-rl-model")
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return str(d)


def _overrides(model_dir, out, **kw) -> list[str]:
    base = {"model.name_or_path": model_dir, "data.train": str(DEMO_HELDOUT), "rollout.prompts_per_step": 4,
            "rollout.n": 2, "rollout.max_new_tokens": 6, "train.max_steps": 2, "train.lr": 1e-3,
            "train.adam_eps": 1e-3, "critic.lr": 1e-3, "reward.verifier": "tests.train.rl_fakes:varied",
            "ppo.micro_batch_size": 2, "train.output_dir": str(out)}
    base.update(kw)
    return [f"{k}={v}" for k, v in base.items()] + QUIET


def _cfg(model_dir, out, **kw):
    from alignkit.config import load_config
    from alignkit.train.rl import RLConfig

    return load_config(RLConfig, None, _overrides(model_dir, out, **kw))


def _weights(path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(Path(path) / "model.safetensors")


def _max_diff(a, b) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.mark.parametrize("kw, message", [
    ({"advantage.type": "grpo", "critic": "null", "rollout.n": 1}, "needs rollout.n >= 2"),
    ({"advantage.type": "rloo", "critic": "null", "rollout.n": 1}, "needs rollout.n >= 2"),
    ({"critic": "null"}, "advantage.type=gae needs a critic"),
    ({"advantage.type": "grpo"}, "uses no critic: set critic: null"),
    ({"reward.type": "model"}, "reward.model"),
    ({"reward.type": "sum", "reward.weights": "{bogus: 1.0}"}, "keys among verifier, model, judge"),
    ({"ptx.coef": 0.1}, "ptx.coef > 0 needs ptx.data"),
    ({"rollout.temperature": 0.0}, "rollout.temperature must be > 0"),
])
def test_bad_combinations_refused(tmp_path, kw, message):
    from alignkit.errors import ConfigError

    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        _cfg("m", tmp_path, **kw)


def test_bad_combination_through_cli(tmp_path, capsys):
    from alignkit.cli import main

    code = main(["rl", *_overrides("m", tmp_path, **{"advantage.type": "grpo", "critic": "null", "rollout.n": 1})])
    assert code == 2 and "needs rollout.n >= 2" in capsys.readouterr().err


def test_vllm_refused_clearly(tmp_path, rl_model_dir):
    from alignkit.errors import ConfigError
    from alignkit.train.rl import train_rl

    with pytest.raises(ConfigError, match="rollout.backend=vllm"):
        train_rl(_cfg(rl_model_dir, tmp_path / "v", **{"rollout.backend": "vllm"}))


def test_first_minibatch_ratio_one_kl_zero_and_update(tmp_path, rl_model_dir):
    """Step 0, first minibatch: the policy equals the sampler (ratio 1) and the reference (KL 0); it then
    moves (4 optimizer steps: 2 epochs x 2 minibatches, with a PTX term on SFT rows)."""
    from alignkit.data.verifiable import DEMO_SFT
    from alignkit.train.rl import train_rl

    s = train_rl(_cfg(rl_model_dir, tmp_path / "r", **{"train.max_steps": 1, "ppo.epochs": 2,
                                                       "ppo.num_minibatches": 2, "ptx.data": str(DEMO_SFT),
                                                       "ptx.coef": 0.1, "ptx.batch_size": 2}))
    logged = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert s["steps"] == 1 and s["optimizer_steps"] == 4 and len(logged) == 1
    assert logged[0]["first_minibatch/ratio_max_dev"] < 1e-5
    assert logged[0]["first_minibatch/kl_ref_max"] < 1e-5
    assert logged[0]["policy/ratio"] != 1.0  # later minibatches see updated weights
    assert math.isfinite(logged[0]["loss/value"]) and logged[0]["reward/failed"] == 0
    assert math.isfinite(logged[0]["ptx/nll"]) and logged[0]["ptx/nll"] > 1.0  # SFT rows are not what a random model says
    from transformers import AutoModelForCausalLM

    before = AutoModelForCausalLM.from_pretrained(rl_model_dir).state_dict()
    after = _weights(tmp_path / "r")
    assert _max_diff({k: before[k] for k in after}, after) > 1e-4


def _ctx(tmp_path, rl_model_dir, **kw):
    from alignkit.train.rl_setup import build_run
    from alignkit.train.run import make_accelerator

    cfg = _cfg(rl_model_dir, tmp_path / "c", **kw)
    return build_run(cfg, make_accelerator("fp32"))


def _samples(ctx, texts_per_prompt: list[list[str]]):
    from alignkit.generate.engine import HFEngine
    from alignkit.train.rl_rollout import Sample

    engine = HFEngine(ctx.acc.unwrap_model(ctx.policy).model, ctx.tok)
    out = []
    for i, texts in enumerate(texts_per_prompt):
        p_ids = engine.encode(ctx.rows[i]["prompt"])
        for text in texts:
            ids = ctx.tok(text, add_special_tokens=False).input_ids + [ctx.tok.eos_token_id]
            out.append(Sample(i, p_ids, ids, text, "stop"))
    return out


def test_reference_baseline_shifts_advantages_by_reference_reward(tmp_path, rl_model_dir):
    """r'(x, y) = r(x, y) - r(x, y_ref), y_ref the reference's greedy answer (computed once, cached);
    with gamma = lam = 1, no KL, no whitening, GAE advantages move by exactly -r(x, y_ref)."""
    from tests.train.rl_fakes import varied

    from alignkit.generate.engine import HFEngine, SamplingParams
    from alignkit.train import rl

    kw = {"reward.normalize": "false", "reward.clip": "null", "kl.coef": 0.0, "advantage.gamma": 1.0,
          "advantage.lam": 1.0, "advantage.whiten": "false"}
    texts = [["a b", "hello there"], ["x", "yes sir ok"]]
    results = {}
    for on in (False, True):
        ctx = _ctx(tmp_path, rl_model_dir, **{**kw, "reward.reference_baseline": str(on).lower()})
        samples = _samples(ctx, texts)
        raw, used, _ = rl.score(ctx, samples)
        t = rl.rollout_tensors(ctx, samples)
        rl.advantages(ctx, t, used)
        results[on] = (raw, used, t, ctx)
    ctx = results[True][3]
    engine = HFEngine(ctx.reference.model, ctx.tok)
    greedy = engine.generate([ctx.rows[i]["prompt"] for i in range(2)], SamplingParams(max_new_tokens=6))
    r_ref = torch.tensor([varied(None, greedy[i].completions[0].text, "stop") for i in (0, 0, 1, 1)])
    assert ctx.state.ref_rewards == {"0": r_ref[0].item(), "1": r_ref[2].item()}
    assert torch.allclose(results[True][0], results[False][0].double())  # raw rewards unchanged
    assert torch.allclose(results[True][1].double(), (results[False][1].double() - r_ref.double()), atol=1e-6)
    t_off, t_on = results[False][2], results[True][2]
    m = t_on["mask"]
    shift = (t_on["adv"] - t_off["adv"])[m]
    expected = (-r_ref[:, None].expand_as(m))[m]
    assert r_ref.abs().sum() > 0 and torch.allclose(shift, expected.float(), atol=1e-5)


def test_failing_judge_masks_samples_never_zero(tmp_path, rl_model_dir, monkeypatch):
    """Judge failures are NaN rewards: masked out of the update, excluded from the group statistics,
    counted; too many in a step stop with a diagnostic."""
    from tests.train.rl_fakes import ParityJudge

    from alignkit.judge import client
    from alignkit.judge.cache import CallCache
    from alignkit.losses.policy import group_advantages
    from alignkit.train import rl
    from alignkit.train.rl_setup import RewardFailureError

    backend = ParityJudge()
    monkeypatch.setattr(client, "judge_from_config",
                        lambda cfg, *a, **k: client.Judge(backend, CallCache(None), concurrency=2, max_retries=0))
    ctx = _ctx(tmp_path, rl_model_dir, **{"reward.type": "judge", "advantage.type": "grpo", "critic": "null",
                                           "rollout.n": 3, "reward.normalize": "false", "kl.coef": 0.0})
    texts = [["ab", "abc", "abcd"], ["odd", "even", "xy"]]  # odd lengths fail: abc, odd
    samples = _samples(ctx, texts)
    raw, used, metrics = rl.score(ctx, samples)
    failed = torch.tensor([False, True, False, True, False, False])
    assert torch.isnan(raw[failed]).all() and torch.isnan(used[failed]).all()
    assert torch.allclose(raw[~failed], torch.full((4,), 0.7, dtype=torch.float64))
    assert metrics["reward/failed"] == 2 and ctx.state.failures == 2
    t = rl.rollout_tensors(ctx, samples)
    rl.advantages(ctx, t, used)
    assert not t["mask"][failed].any() and (t["adv"][failed] == 0).all()
    # the group statistics use the valid samples only (a 0 for the failures would shift them)
    expected = group_advantages(used.nan_to_num(0).view(2, 3), ~failed.view(2, 3)).flatten()
    assert torch.allclose(t["adv"][~failed, 0], expected[~failed])
    ctx.cfg.reward.max_failure_fraction = 0.2
    with pytest.raises(RewardFailureError, match="2 of 6 samples have no reward"):
        rl.score(ctx, samples)


def test_reward_model_sum_and_critic_from_reward_model(tmp_path, rl_model_dir):
    """reward.type=sum over the verifier and an rm checkpoint; the critic starts from the rm's backbone + head."""
    from alignkit.models import load_reward_model, load_tokenizer
    from alignkit.train import rl
    from alignkit.train.reward import distinct_pad
    from alignkit.train.run import RewardForward

    rm_dir = tmp_path / "rm"
    tok = load_tokenizer(rl_model_dir)
    distinct_pad(tok)
    torch.manual_seed(0)
    rm = load_reward_model(rl_model_dir)
    rm.config.pad_token_id = tok.pad_token_id
    rm.save_pretrained(rm_dir)
    tok.save_pretrained(rm_dir)
    kw = {"reward.type": "sum", "reward.weights": "{verifier: 1.0, model: 0.5}", "reward.model": str(rm_dir),
          "critic.init": "reward_model", "train.max_steps": 1}
    ctx = _ctx(tmp_path, rl_model_dir, **kw)
    samples = _samples(ctx, [["a b"], ["hello"]])
    raw, _, _ = rl.score(ctx, samples)
    from tests.train.rl_fakes import varied

    fwd = RewardForward(load_reward_model(str(rm_dir))).eval()
    for s, r in zip(samples, raw.tolist(), strict=True):
        ids = tok.apply_chat_template([{"role": "user", "content": ctx.rows[s.prompt_index]["prompt"]},
                                       {"role": "assistant", "content": s.text}], tokenize=False)
        ids = tok(ids[: ids.rindex(tok.eos_token) + len(tok.eos_token)], add_special_tokens=False,
                  return_tensors="pt").input_ids
        with torch.no_grad():
            expected = varied(None, s.text, "stop") + 0.5 * fwd(ids, torch.ones_like(ids)).item()
        assert abs(r - expected) < 1e-5
    head = ctx.acc.unwrap_model(ctx.critic).head.weight
    assert torch.equal(head, fwd.model.score.weight)
    s = rl.train_rl(_cfg(rl_model_dir, tmp_path / "run", **kw))
    assert s["steps"] == 1 and math.isfinite(s["last"]["loss/value"])


# Tolerances of the RL invariants on the final weights, per precision. fp32: exact up to summation order.
# bf16 (autocast matmuls, fp32 master weights): other micro-batch shapes change the bf16 rounding of each
# gradient by a few ulps (2^-8 each); one Adam step lr*m/(sqrt(v)+eps) moves by at most lr*r/4 for a
# relative gradient error r (see tests/train/test_recipes.py), so 4 optimizer steps (2 steps x 2
# minibatches) at lr=1e-3 with r = 32 ulps allow 4 * 1e-3 * 32 * 2^-8 / 4 = 1.25e-4.
RL_TOL = {"fp32": 1e-6, "bf16": 4 * 1e-3 * 32 * 2**-8 / 4}


@pytest.mark.precision_sensitive
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_accumulation_invariant_micro_4_equals_micro_1(tmp_path, rl_model_dir, precision):
    from alignkit.train.rl import train_rl

    outs = []
    for mbs in (4, 1):
        out = tmp_path / f"m{mbs}"
        s = train_rl(_cfg(rl_model_dir, out, **{"ppo.micro_batch_size": mbs, "ppo.num_minibatches": 2,
                                                "train.precision": precision}))
        assert s["precision"]["precision"] == precision
        outs.append(_weights(out))
    assert _max_diff(outs[0], outs[1]) < RL_TOL[precision]


def _run_cli(args, env, wait=True):
    cmd = [sys.executable, "-m", "alignkit", "rl", *args]
    if wait:
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)


def test_resume_after_sigkill_equals_uninterrupted(tmp_path, rl_model_dir):
    """SIGKILL during step 2 (after the step-1 checkpoint), --resume to step 3 == 3 uninterrupted steps."""
    from alignkit.train.rl import train_rl

    kw = {"train.max_steps": 3, "train.save_every": 1, "reward.reference_baseline": "true",
          "train.precision": "fp32"}  # an exact invariant: never left to `auto`
    full = train_rl(_cfg(rl_model_dir, tmp_path / "full", **kw))
    env = {**ENV, "ALIGNKIT_HOME": os.environ["ALIGNKIT_HOME"]}
    args = _overrides(rl_model_dir, tmp_path / "part", **kw)
    proc = _run_cli(args, env, wait=False)
    ckpt = tmp_path / "part" / "checkpoints" / "step-0000001"
    deadline = time.time() + 300
    while not ckpt.is_dir() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.is_dir() and not (tmp_path / "part" / "summary.json").exists(), proc.stderr.read()[-2000:]
    r = _run_cli([*args, "--resume"], env)
    assert r.returncode == 0, r.stderr[-3000:]
    resumed = json.loads((tmp_path / "part" / "summary.json").read_text())
    assert resumed["steps"] == 3 and resumed["optimizer_steps"] == full["optimizer_steps"]
    assert _max_diff(_weights(tmp_path / "full"), _weights(tmp_path / "part")) <= 1e-6
    drop = ("time/", "elapsed")
    lines = [[{k: v for k, v in json.loads(x).items() if not k.startswith(drop)}
              for x in (tmp_path / d / "metrics.jsonl").read_text().splitlines()] for d in ("full", "part")]
    assert [x["step"] for x in lines[1]] == [1, 2, 3]
    for a, b in zip(*lines, strict=True):
        assert a.keys() == b.keys() and all(abs(a[k] - b[k]) <= 1e-5 for k in a if isinstance(a[k], float))


@pytest.mark.slow  # two processes: an integration test for `make test`, not the fast tier
@pytest.mark.precision_sensitive
@pytest.mark.parametrize("launcher, precision", [("torchrun", "fp32"), ("accelerate", "fp32"), ("torchrun", "bf16")])
def test_two_processes_equal_one(tmp_path, rl_model_dir, launcher, precision):
    """2 CPU processes with gloo (2 prompts each) == 1 process (4 prompts), under torchrun and under
    ``accelerate launch`` with the shipped configs/accelerate/cpu_ddp.yaml; in bf16 within RL_TOL."""
    from alignkit.train.rl import train_rl

    kw = {"advantage.whiten": "true", "train.precision": precision}
    one = train_rl(_cfg(rl_model_dir, tmp_path / "one", **kw))
    env = {**ENV, "ALIGNKIT_HOME": os.environ["ALIGNKIT_HOME"]}
    bindir = os.path.dirname(sys.executable)
    root = Path(__file__).resolve().parents[2]
    port = {"torchrun": 29537, "accelerate": 29538}[launcher] + (10 if precision == "bf16" else 0)
    launch = ([os.path.join(bindir, "torchrun"), "--nproc_per_node", "2", "--master_port", str(port)]
              if launcher == "torchrun" else
              [os.path.join(bindir, "accelerate"), "launch", "--config_file",
               str(root / "configs" / "accelerate" / "cpu_ddp.yaml"), "--main_process_port", str(port)])
    two = subprocess.run([*launch, "-m", "alignkit", "rl", *_overrides(rl_model_dir, tmp_path / "two", **kw)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    s2 = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert s2["processes"] == 2 and one["processes"] == 1
    assert s2["precision"]["precision"] == one["precision"]["precision"] == precision
    assert s2["steps"] == 2 and abs(s2["last"]["reward/mean"] - one["last"]["reward/mean"]) < 1e-9
    assert _max_diff(_weights(tmp_path / "one"), _weights(tmp_path / "two")) < RL_TOL[precision]


@pytest.mark.slow
def test_real_rl_on_embedded_model_through_cli(tmp_path):
    """A short PPO run of `alignkit rl` on SmolLM2-135M through the CLI: HF checkpoint, metrics, report."""
    from transformers import AutoModelForCausalLM

    heldout = tmp_path / "heldout.jsonl"
    heldout.write_text("".join(DEMO_HELDOUT.read_text().splitlines(keepends=True)[:3]))
    out = tmp_path / "run"
    env = {**ENV, "ALIGNKIT_HOME": os.environ["ALIGNKIT_HOME"]}
    root = Path(__file__).resolve().parents[2]
    r = _run_cli(["--config", str(root / "configs" / "rl_ppo_smollm2.yaml"), f"data.eval={heldout}",
                  "data.eval_max_new_tokens=12", "rollout.prompts_per_step=2", "rollout.n=2",
                  "rollout.max_new_tokens=12", "train.max_steps=1", "ppo.epochs=1", "ppo.num_minibatches=1",
                  "train.save_every=null", "train.progress=false", f"train.output_dir={out}"], env)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 1 and summary["heldout_after"]["n"] == 3
    assert 0.0 <= summary["heldout_before"]["reward_mean"] <= 1.0
    logged = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(logged) == 1 and logged[0]["first_minibatch/ratio_max_dev"] < 1e-4
    assert (out / "report.md").is_file() and (out / "rl_curves.png").stat().st_size > 10_000
    assert (out / "tensorboard").is_dir() and (out / "checkpoints" / "step-0000001").is_dir()
    assert AutoModelForCausalLM.from_pretrained(out).num_parameters() > 100e6


def test_demo_grpo_stage_settings_are_a_valid_config(tmp_path):
    from alignkit.config import load_config
    from alignkit.pipelines.rl_stage import grpo_stage_overrides
    from alignkit.train.rl import RLConfig

    cfg = load_config(RLConfig, None, grpo_stage_overrides("m", str(DEMO_HELDOUT), None, str(tmp_path), steps=2))
    assert cfg.advantage.type == "grpo" and cfg.critic is None and cfg.train.max_steps == 2 and cfg.data.eval is None
