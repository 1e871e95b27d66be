"""Online RLHF: ``alignkit rl`` -- PPO (critic + GAE), GRPO and RLOO with ChatGLM-RLHF's stabilisers.

One RL step, top to bottom (:func:`rl_step`):

1. **rollout** -- ``rollout.prompts_per_step`` prompts (a seeded permutation of the prompt file per
   epoch; the position is the step number) x ``rollout.n`` samples from the policy's own weights
   through the shared engine, each sample seeded from (seed, step, prompt position);
2. **score** -- the reward (verifier | model | judge | sum). A reward that cannot be computed is NaN:
   the sample is masked and counted, never scored 0; a step with too many fails stops. Optional
   ChatGLM-RLHF stabilisers: reference baseline ``r(x,y) - r(x,y_ref)`` (``y_ref`` = the reference
   policy's greedy answer, computed once per prompt) and running normalisation + clipping;
3. **old log-probs, reference log-probs, values** (no gradient);
4. **advantages** -- ``gae`` (per-token rewards with the KL penalty, critic), ``grpo`` (group mean/std
   over the n samples of a prompt) or ``rloo`` (leave-one-out); KL either in the reward or a loss term;
5. **PPO** -- ``ppo.epochs`` passes over ``ppo.num_minibatches`` minibatches, one optimizer step each;
   token sums divided by the token (or sequence) count of the whole minibatch over accumulation and
   processes (``alignkit.losses.policy``); optional PTX loss on SFT rows with weight ``ptx.coef``;
6. **log / checkpoint** -- metrics.jsonl + TensorBoard; atomic checkpoints holding policy, critic,
   optimizers, schedulers, RNG, running reward statistics, reference-baseline cache and step.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from alignkit.errors import ConfigError, UserError
from alignkit.losses import policy as P
from alignkit.train.rl_config import RewardConfig, RLConfig
from alignkit.train.rl_rollout import (
    TokenLogpsForward,
    collate_samples,
    load_critic,
    read_prompt_rows,
    response_mask,
    rollout,
    to_response_layout,
)


class RewardFailureError(UserError):
    """Too many samples of a step have no reward."""


@dataclass
class RunState:
    """Everything besides weights/optimizers/RNG that a resumed run must restore."""

    step: int = 0
    opt_steps: int = 0
    reward_moments: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # count, mean, M2
    ref_rewards: dict[str, float] = field(default_factory=dict)  # prompt index -> r(x, y_ref)
    failures: int = 0
    heldout_before: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------- setup
def build_reward(cfg: RewardConfig, device):
    from alignkit.train import rl_rewards as R

    def part(kind: str):
        if kind == "verifier":
            return R.verifier_reward(cfg.verifier)
        if kind == "model":
            return R.model_reward(cfg.model, device)
        from alignkit.judge.client import judge_from_config

        return R.judge_reward(judge_from_config(cfg.judge), cfg.judge_max_tokens)

    if cfg.type == "sum":
        return R.weighted_sum({k: part(k) for k in cfg.weights}, cfg.weights)
    return part(cfg.type)


def _check_runtime(cfg: RLConfig, acc) -> None:
    if cfg.rollout.backend == "vllm":
        from alignkit.generate.engine import vllm_available

        ok, reason = vllm_available()
        raise ConfigError("rollout.backend=vllm: " + (
            f"cannot be used here ({reason}); use rollout.backend=hf" if not ok else
            "weight sync from the trainer into a vLLM engine is not implemented yet; use rollout.backend=hf"))
    if cfg.rollout.prompts_per_step % acc.num_processes:
        raise ConfigError(f"rollout.prompts_per_step={cfg.rollout.prompts_per_step} must divide by the "
                          f"{acc.num_processes} processes")
    local = cfg.rollout.prompts_per_step // acc.num_processes * cfg.rollout.n
    if local % cfg.ppo.num_minibatches:
        raise ConfigError(f"{local} samples per process per step do not split into ppo.num_minibatches="
                          f"{cfg.ppo.num_minibatches} equal minibatches")


def _gsum(acc, *values: float) -> list[float]:
    """Sum each value over processes (float64)."""
    t = torch.tensor(values, dtype=torch.float64, device=acc.device)
    if acc.num_processes > 1:
        t = acc.reduce(t, reduction="sum")
    return t.tolist()


def _gather(acc, t: torch.Tensor) -> torch.Tensor:
    return acc.gather(t.to(acc.device)).cpu() if acc.num_processes > 1 else t


@dataclass
class Ctx:
    """The live objects of a run (built once by :func:`train_rl`)."""

    cfg: RLConfig
    acc: Any
    tok: Any
    policy: Any  # prepared TokenLogpsForward
    reference: Any  # frozen TokenLogpsForward
    critic: Any | None
    opt: Any
    sched: Any
    critic_opt: Any | None
    critic_sched: Any | None
    rows: list[dict]
    reward_fn: Any
    ptx: list | None
    state: RunState


def _policy_engine(ctx: Ctx, model):
    from alignkit.generate.engine import HFEngine

    return HFEngine(model, ctx.tok, batch_size=ctx.cfg.rollout.batch_size)


# ---------------------------------------------------------------------------------- 2. score
def score(ctx: Ctx, samples) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """Raw rewards, the rewards the update uses (baseline, normalisation, clipping), and metrics."""
    cfg, st = ctx.cfg.reward, ctx.state
    rows = [ctx.rows[s.prompt_index] for s in samples]
    raw = torch.tensor(ctx.reward_fn(rows, samples), dtype=torch.float64)
    used = raw.clone()
    if cfg.reference_baseline:
        used = used - torch.tensor([_ref_reward(ctx, s.prompt_index) for s in samples], dtype=torch.float64)
    failed_local = int((~torch.isfinite(used)).sum())
    everything = _gather(ctx.acc, used)
    failed = int((~torch.isfinite(everything)).sum())
    st.failures += failed
    if failed > cfg.max_failure_fraction * everything.numel():
        bad = [f"prompt {s.prompt_index}: {s.text[:60]!r}" for s, v in zip(samples, used, strict=True)
               if not math.isfinite(v)][:3]
        raise RewardFailureError(
            f"step {st.step}: {failed} of {everything.numel()} samples have no reward (reward.type="
            f"{cfg.type}; limit reward.max_failure_fraction={cfg.max_failure_fraction}); e.g. {bad}. Check the "
            "judge / reward model / verifier; failed samples are masked, never scored 0")
    ok = everything[torch.isfinite(everything)]
    if cfg.normalize:
        st.reward_moments = list(P.update_running_moments(*st.reward_moments, ok))
        count, mean, m2 = st.reward_moments
        used = P.normalize_rewards(used, mean, math.sqrt(m2 / count) if count else 1.0, cfg.clip,
                                   shift_mean=not cfg.reference_baseline)
    elif cfg.clip is not None:
        used = used.clamp(-cfg.clip, cfg.clip)
    raw_all = _gather(ctx.acc, raw)
    raw_ok = raw_all[torch.isfinite(raw_all)]
    metrics = {"reward/mean": float(raw_ok.mean()) if raw_ok.numel() else math.nan,
               "reward/failed": failed, "reward/failed_local": failed_local,
               "reward/used_mean": float(ok.mean()) if ok.numel() else math.nan}
    return raw, used.float(), metrics


def _ref_reward(ctx: Ctx, index: int) -> float:
    """r(x, y_ref) with y_ref the reference policy's greedy answer; computed once per prompt, cached."""
    from alignkit.generate.engine import SamplingParams
    from alignkit.train.rl_rollout import rollout as sample

    key = str(index)
    if key not in ctx.state.ref_rewards:
        engine = _policy_engine(ctx, ctx.reference.model)
        params = SamplingParams(max_new_tokens=ctx.cfg.rollout.max_new_tokens, temperature=0.0)
        [y_ref] = sample(engine, ctx.rows, [index], [0], params, 0, 0)
        ctx.state.ref_rewards[key] = ctx.reward_fn([ctx.rows[index]], [y_ref])[0]
    return ctx.state.ref_rewards[key]


# --------------------------------------------------------------- 3. old / reference log-probs, values
@torch.no_grad()
def rollout_tensors(ctx: Ctx, samples) -> dict[str, torch.Tensor]:
    """Response-layout ``(B, L)`` tensors: response mask, old and reference log-probs, old values."""
    dev, mbs = ctx.acc.device, ctx.cfg.ppo.micro_batch_size
    length = max(len(s.response_ids) for s in samples)
    parts: dict[str, list[torch.Tensor]] = {"old_logps": [], "ref_logps": [], "values": []}
    for i in range(0, len(samples), mbs):
        b = collate_samples(samples[i : i + mbs], ctx.tok.pad_token_id, dev)
        args = (b["input_ids"], b["attention_mask"], b["loss_mask"])
        with ctx.acc.autocast():
            parts["old_logps"].append(to_response_layout(ctx.policy(*args)[0], b["plen"], length))
            parts["ref_logps"].append(to_response_layout(ctx.reference(*args)[0], b["plen"], length))
            if ctx.critic is not None:
                v = ctx.critic(b["input_ids"], b["attention_mask"])
                parts["values"].append(to_response_layout(v, b["plen"], length))
    out = {k: torch.cat(v).float() for k, v in parts.items() if v}
    out["resp_mask"] = response_mask(samples, length, dev)
    return out


# -------------------------------------------------------------------------------- 4. advantages
def advantages(ctx: Ctx, t: dict[str, torch.Tensor], used: torch.Tensor) -> dict[str, float]:
    """Fill ``t["mask"]``, ``t["adv"]`` (and ``t["returns"]`` for gae); returns metrics."""
    cfg, acc = ctx.cfg, ctx.acc
    valid = torch.isfinite(used).to(acc.device)
    scores = torch.where(valid, used.to(acc.device), torch.zeros_like(used, device=acc.device))
    mask = t["resp_mask"] & valid[:, None]
    kl_tok = P.kl_penalty(t["old_logps"], t["ref_logps"], "k1") * mask
    beta = cfg.kl.coef if cfg.kl.mode == "reward" else 0.0
    if cfg.advantage.type == "gae":
        rewards = P.shaped_token_rewards(scores, kl_tok, mask, beta)
        adv, t["returns"] = P.gae(rewards, t["values"], mask, cfg.advantage.gamma, cfg.advantage.lam)
        if cfg.advantage.whiten:
            s, s2, n = _gsum(acc, float(adv[mask].sum()), float((adv[mask] ** 2).sum()), float(mask.sum()))
            mean, std = P.moments(torch.tensor(s), torch.tensor(s2), torch.tensor(n))
            adv = P.whiten(adv, mask, mean.float(), std.float())
    else:
        seq = scores - beta * kl_tok.sum(-1)
        groups, ok = seq.view(-1, cfg.rollout.n), valid.view(-1, cfg.rollout.n)
        fn = P.rloo_advantages if cfg.advantage.type == "rloo" else (
            lambda s, v: P.group_advantages(s, v, scale=cfg.advantage.scale_std))
        per_seq = fn(groups, ok).flatten()
        usable = (ok.sum(-1, keepdim=True) >= 2).expand_as(ok).flatten()  # a lone valid sample has no baseline
        mask = mask & usable[:, None]
        adv = per_seq[:, None] * mask
    t["mask"], t["adv"] = mask, adv
    kl_sum, n_valid, masked = _gsum(acc, float(kl_tok.sum()), float(valid.sum()), float((~mask.any(-1)).sum()))
    return {"kl/ref_k1_per_sample": kl_sum / max(n_valid, 1), "samples/masked": masked}


# ------------------------------------------------------------------------------------- 5. PPO
def ppo_update(ctx: Ctx, samples, t: dict[str, torch.Tensor]) -> dict[str, float]:
    """``ppo.epochs`` x ``ppo.num_minibatches`` optimizer steps on one rollout batch; token-mean metrics."""
    cfg = ctx.cfg
    sums: dict[str, float] = {}
    first: dict[str, float] = {}
    norms = []
    for epoch in range(cfg.ppo.epochs):
        gen = torch.Generator().manual_seed(cfg.train.seed * 7919 + ctx.state.step * 131 + epoch)
        perm = torch.randperm(len(samples), generator=gen)
        for mb in perm.chunk(cfg.ppo.num_minibatches):
            stats = _minibatch_step(ctx, samples, t, mb.tolist())
            norms.append(stats.pop("grad_norm"))
            dev, kl_max = stats.pop("ratio_max_dev"), stats.pop("kl_ref_max")
            # the first minibatch sees the rollout weights: ratio == 1 always, KL == 0 at step 0
            first = first or {"first_minibatch/ratio_max_dev": dev, "first_minibatch/kl_ref_max": kl_max}
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + v
    g = dict(zip(sums, _gsum(ctx.acc, *sums.values()), strict=True))
    tokens = max(g.pop("tokens", 0.0), 1.0)
    out = {k: v / tokens for k, v in g.items() if k.startswith(("policy/", "loss/"))}
    if "ptx_tokens" in g:
        out["ptx/nll"] = g["ptx_nll"] / max(g["ptx_tokens"], 1.0)
    out["grad_norm"] = sum(norms) / len(norms)
    return {**out, **first}


def _minibatch_step(ctx: Ctx, samples, t, rows: list[int]) -> dict[str, float]:
    cfg, acc = ctx.cfg, ctx.acc
    mask = t["mask"][rows]
    n_tok, n_seq = _gsum(acc, float(mask.sum()), float(mask.any(-1).sum()))
    denom = n_tok if cfg.ppo.loss_reduction == "token" else n_seq
    stats = {"tokens": 0.0, "ratio_max_dev": 0.0, "kl_ref_max": 0.0, "grad_norm": 0.0}
    if denom == 0:  # every sample of this minibatch is masked, on every process: nothing to learn
        return stats
    reduce = P.global_token_loss if cfg.ppo.loss_reduction == "token" else P.global_sequence_loss
    mbs = cfg.ppo.micro_batch_size
    micro = [rows[i : i + mbs] for i in range(0, len(rows), mbs)]
    ctx.policy.train()
    if ctx.ptx is not None:
        stats.update(_ptx_backward(ctx))
    for j, mic in enumerate(micro):
        sync = j == len(micro) - 1
        with contextlib.ExitStack() as stack:
            if not sync:
                stack.enter_context(acc.no_sync(ctx.policy))
                if ctx.critic is not None:
                    stack.enter_context(acc.no_sync(ctx.critic))
            b = collate_samples([samples[i] for i in mic], ctx.tok.pad_token_id, acc.device)
            m, length = t["mask"][mic], t["mask"].shape[1]
            with acc.autocast():
                lp, ent = ctx.policy(b["input_ids"], b["attention_mask"], b["loss_mask"])
            lp, ent = to_response_layout(lp, b["plen"], length), to_response_layout(ent, b["plen"], length)
            per_tok, pm = P.ppo_policy_loss(lp, t["old_logps"][mic], t["adv"][mic], m, cfg.ppo.clip_eps)
            kl_now = P.kl_penalty(lp, t["ref_logps"][mic], cfg.kl.estimator)
            if cfg.kl.mode == "loss" and cfg.kl.coef:
                per_tok = per_tok + cfg.kl.coef * kl_now * m
            if cfg.ppo.entropy_coef:
                per_tok = per_tok - cfg.ppo.entropy_coef * ent * m
            loss = reduce(per_tok, m, denom)
            _finite(loss, ctx, "policy loss")
            acc.backward(loss * acc.num_processes)  # DDP averages gradients: undo it, the sum is global
            if ctx.critic is not None:
                with acc.autocast():
                    v = to_response_layout(ctx.critic(b["input_ids"], b["attention_mask"]), b["plen"], length)
                vl, vm = P.value_loss(v.float(), t["values"][mic], t["returns"][mic], m, cfg.critic.value_clip)
                vloss = reduce(vl, m, denom)
                _finite(vloss, ctx, "value loss")
                acc.backward(vloss * acc.num_processes)
                stats["loss/value"] = stats.get("loss/value", 0.0) + float(P.masked_sum(vl.detach(), m))
                stats["policy/value_clipfrac"] = stats.get("policy/value_clipfrac", 0.0) + float(
                    P.masked_sum(vm["clipped"], m))
        fm = m.float()
        dev = ((pm["ratio"] - 1).abs() * fm)
        stats["ratio_max_dev"] = max(stats["ratio_max_dev"], float(dev.max()))
        stats["kl_ref_max"] = max(stats["kl_ref_max"], float(((lp.detach() - t["ref_logps"][mic]).abs() * fm).max()))
        for key, val in (("loss/policy", per_tok.detach()), ("policy/entropy", ent.detach()),
                         ("policy/clipfrac", pm["clipped"]), ("policy/ratio", pm["ratio"]),
                         ("policy/approx_kl_old", 0.5 * (lp.detach() - t["old_logps"][mic]) ** 2),
                         ("policy/kl_ref", kl_now.detach())):
            stats[key] = stats.get(key, 0.0) + float((val * fm).sum())
        stats["tokens"] += float(fm.sum())
    stats["grad_norm"] = _optimizer_step(ctx)
    return stats


def _finite(loss: torch.Tensor, ctx: Ctx, what: str) -> None:
    from alignkit.train.loop import NonFiniteError

    if not torch.isfinite(loss):
        raise NonFiniteError(f"step {ctx.state.step}: {what} is {loss.item()}; lower train.lr or check the rewards")


def _optimizer_step(ctx: Ctx) -> float:
    from alignkit.train.loop import NonFiniteError

    norms = []
    for model, opt, sched in ((ctx.policy, ctx.opt, ctx.sched), (ctx.critic, ctx.critic_opt, ctx.critic_sched)):
        if model is None:
            continue
        params = [p for p in model.parameters() if p.requires_grad]
        if ctx.cfg.train.max_grad_norm is not None:
            norm = float(ctx.acc.clip_grad_norm_(params, ctx.cfg.train.max_grad_norm))
        else:
            norm = float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None])))
        if not math.isfinite(norm):
            raise NonFiniteError(f"step {ctx.state.step}: gradient norm is {norm}; lower the learning rate")
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        norms.append(norm)
    ctx.state.opt_steps += 1
    return norms[0]


def _ptx_backward(ctx: Ctx) -> dict[str, float]:
    """gamma * (sum of SFT-token NLL) / (SFT tokens of this optimizer step over all processes)."""
    from alignkit.data.batching import collate
    from alignkit.train.loop import step_indices

    acc, cfg = ctx.acc, ctx.cfg.ptx
    idx = step_indices(len(ctx.ptx), ctx.state.opt_steps, cfg.batch_size * acc.num_processes, ctx.cfg.train.seed)
    mine = idx[acc.process_index * cfg.batch_size : (acc.process_index + 1) * cfg.batch_size]
    b = {k: v.to(acc.device) for k, v in collate([ctx.ptx[i] for i in mine], ctx.tok.pad_token_id).items()}
    (n,) = _gsum(acc, float(b["loss_mask"].sum()))
    fwd = acc.unwrap_model(ctx.policy)
    sampling_t, fwd.temperature = fwd.temperature, 1.0  # the NLL of the model itself, not of its sampler
    try:
        with acc.no_sync(ctx.policy), acc.autocast():
            lp, _ = ctx.policy(b["input_ids"], b["attention_mask"], b["loss_mask"])
            nll = -lp.sum()
            acc.backward(cfg.coef * nll / n * acc.num_processes)
    finally:
        fwd.temperature = sampling_t
    return {"ptx_nll": float(nll.detach()), "ptx_tokens": float(b["loss_mask"].sum())}


# ------------------------------------------------------------------------------- one RL step
def rl_step(ctx: Ctx) -> dict[str, float]:
    from alignkit.generate.engine import SamplingParams
    from alignkit.train.loop import step_indices

    cfg, acc, st = ctx.cfg, ctx.acc, ctx.state
    t0 = time.perf_counter()
    per_proc = cfg.rollout.prompts_per_step // acc.num_processes
    order = step_indices(len(ctx.rows), st.step, cfg.rollout.prompts_per_step, cfg.train.seed)
    lo = acc.process_index * per_proc
    params = SamplingParams(max_new_tokens=cfg.rollout.max_new_tokens, temperature=cfg.rollout.temperature,
                            top_p=cfg.rollout.top_p, top_k=cfg.rollout.top_k, n=cfg.rollout.n)
    policy_hf = acc.unwrap_model(ctx.policy).model
    samples = rollout(_policy_engine(ctx, policy_hf), ctx.rows, order[lo : lo + per_proc],
                      list(range(lo, lo + per_proc)), params, cfg.train.seed, st.step)
    policy_hf.train()
    t_gen = time.perf_counter() - t0
    raw, used, logs = score(ctx, samples)
    t = rollout_tensors(ctx, samples)
    logs.update(advantages(ctx, t, used))
    logs.update(ppo_update(ctx, samples, t))
    lens = torch.tensor([len(s.response_ids) for s in samples], dtype=torch.float64)
    trunc = float(sum(s.finish_reason == "length" for s in samples))
    n_all, len_sum, trunc_sum = _gsum(acc, float(len(samples)), float(lens.sum()), trunc)
    logs.update({"response/length_mean": len_sum / n_all, "response/truncated_frac": trunc_sum / n_all})
    if ctx.critic is not None:
        logs["value/explained_variance"] = _explained_variance(acc, t)
    st.step += 1
    logs.update({"step": st.step, "loss": logs.get("loss/policy", math.nan), "lr": ctx.sched.get_last_lr()[0],
                 "time/generate_s": round(t_gen, 3), "time/step_s": round(time.perf_counter() - t0, 3)})
    return logs


def _explained_variance(acc, t) -> float:
    m = t["mask"]
    ret, d = t["returns"][m].double(), (t["returns"] - t["values"])[m].double()
    n, s_r, s_r2, s_d, s_d2 = _gsum(acc, float(m.sum()), float(ret.sum()), float((ret**2).sum()),
                                    float(d.sum()), float((d**2).sum()))
    n = max(n, 1.0)
    var_r, var_d = s_r2 / n - (s_r / n) ** 2, s_d2 / n - (s_d / n) ** 2
    return 1.0 - var_d / var_r if var_r > 1e-12 else math.nan


# ------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def heldout_reward(ctx: Ctx, rows: list[dict]) -> dict[str, Any]:
    """Greedy answers to held-out prompts, scored by the run's reward (for the verifier: pass rate)."""
    from alignkit.generate.engine import SamplingParams

    if not rows or not ctx.acc.is_main_process:
        return {}
    hf = ctx.acc.unwrap_model(ctx.policy).model
    params = SamplingParams(max_new_tokens=ctx.cfg.data.eval_max_new_tokens, temperature=0.0)
    samples = rollout(_policy_engine(ctx, hf), rows, list(range(len(rows))), list(range(len(rows))), params, 0, 0)
    hf.train()
    scores = torch.tensor(ctx.reward_fn(rows, samples), dtype=torch.float64)
    ok = torch.isfinite(scores)
    return {"n": len(rows), "reward_mean": float(scores[ok].mean()) if ok.any() else math.nan,
            "failed": int((~ok).sum()), "response_length_mean": sum(len(s.response_ids) for s in samples) / len(rows),
            "examples": [{"prompt": str(r["prompt"])[:200], "response": s.text[:300], "reward": float(v)}
                         for r, s, v in list(zip(rows, samples, scores.tolist(), strict=True))[:4]]}


# ------------------------------------------------------------------------------------ the run
def build_run(cfg: RLConfig, acc) -> Ctx:
    """Prompts, policy, frozen reference, critic, reward, optimizers and schedulers, prepared."""
    from transformers import get_scheduler

    from alignkit.data.rows import read_rows
    from alignkit.data.tokenize import DataPolicy, tokenize_examples
    from alignkit.models import load_causal_lm
    from alignkit.train.loop import build_optimizer
    from alignkit.train.run import load_policy

    seed = cfg.train.seed
    builtin = cfg.reward.verifier == "verifiable" and (cfg.reward.type == "verifier" or "verifier" in cfg.reward.weights)
    rows = read_prompt_rows(cfg.data.train, needs_constraint=builtin)
    model, tok = load_policy(cfg.model, seed)
    policy = TokenLogpsForward(model.to(acc.device), temperature=cfg.rollout.temperature)
    reference = TokenLogpsForward(load_causal_lm(cfg.reference.name_or_path or cfg.model.name_or_path)
                                  .to(acc.device), temperature=cfg.rollout.temperature)
    ptx = None
    if cfg.ptx.data:
        ptx, _ = tokenize_examples(read_rows(cfg.ptx.data, "sft"), tok, DataPolicy())
    total = cfg.train.max_steps * cfg.ppo.epochs * cfg.ppo.num_minibatches

    def optimise(module, train_cfg):
        opt = build_optimizer(train_cfg, module)
        kind = "constant_with_warmup" if cfg.train.schedule == "constant" else cfg.train.schedule
        return opt, get_scheduler(kind, opt, num_warmup_steps=cfg.train.warmup_steps, num_training_steps=total)

    opt, sched = optimise(policy, cfg.train)
    critic = critic_opt = critic_sched = None
    if cfg.critic is not None:
        init_from = cfg.critic.name_or_path or (cfg.reward.model if cfg.critic.init == "reward_model"
                                                else cfg.model.name_or_path)
        critic = load_critic(cfg.critic.init, init_from, seed).to(acc.device)
        critic_opt, critic_sched = optimise(critic, cfg.train.model_copy(update={"lr": cfg.critic.lr}))
        policy, opt, critic, critic_opt = acc.prepare(policy, opt, critic, critic_opt)
        acc.register_for_checkpointing(sched, critic_sched)
    else:
        policy, opt = acc.prepare(policy, opt)
        acc.register_for_checkpointing(sched)
    reward_fn = build_reward(cfg.reward, acc.device)
    return Ctx(cfg, acc, tok, policy, reference, critic, opt, sched, critic_opt, critic_sched, rows, reward_fn,
               ptx, RunState())


def _save(ctx: Ctx, out: Path) -> Path:
    from alignkit.train import checkpoint as ckpt

    state = {**ctx.state.__dict__, "max_steps": ctx.cfg.train.max_steps}
    return ckpt.save_checkpoint(ctx.acc, out, ctx.state.step, state, ctx.cfg.train.keep_checkpoints)


def _resume(ctx: Ctx, out: Path) -> None:
    from alignkit.train import checkpoint as ckpt

    path = ckpt.latest_checkpoint(out)
    if path is None:
        raise FileNotFoundError(f"--resume: no checkpoint under {out / ckpt.CKPT_DIR}")
    state = ckpt.load_checkpoint(ctx.acc, path)
    if state.pop("max_steps") != ctx.cfg.train.max_steps:
        raise ConfigError("--resume: train.max_steps differs from the checkpoint's (the LR schedule depends on it)")
    ctx.state = RunState(**state)
    metrics = out / "metrics.jsonl"
    if ctx.acc.is_main_process and metrics.exists():  # drop lines logged after the checkpoint (a kill)
        kept = [x for x in metrics.read_text().splitlines() if json.loads(x)["step"] <= ctx.state.step]
        metrics.write_text("".join(x + "\n" for x in kept))


class _Signals:
    """SIGINT/SIGTERM finish the current step, checkpoint and stop (SIGKILL: resume from the last one)."""

    def __enter__(self):
        self.signal, self._old = None, {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, _frame):
        self.signal = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, h in self._old.items():
            signal.signal(sig, h)
        return False


def train_rl(cfg: RLConfig, resume: bool = False) -> dict[str, Any]:
    """Run the recipe; returns the run summary (also written to ``output_dir/summary.json``)."""
    from alignkit.train.checkpoint import export_model
    from alignkit.train.loop import _progress
    from alignkit.train.run import make_accelerator, prepare_output, seed_everything, write_summary

    acc = make_accelerator(cfg.train.precision)
    _check_runtime(cfg, acc)
    seed_everything(cfg.train.seed)
    ctx = build_run(cfg, acc)
    eval_rows = read_prompt_rows(cfg.data.eval, needs_constraint=cfg.reward.verifier == "verifiable"
                                 and cfg.reward.type in ("verifier", "sum")) if cfg.data.eval else []
    out = prepare_output(acc, cfg, cfg.train.output_dir)
    if resume:
        _resume(ctx, out)
    else:
        if acc.is_main_process and (out / "metrics.jsonl").exists():
            (out / "metrics.jsonl").unlink()
        ctx.state.heldout_before = heldout_reward(ctx, eval_rows)
    writer = None
    if cfg.train.tensorboard and acc.is_main_process:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tensorboard"))
    history = []
    with _Signals() as stop, _progress(cfg.train.progress and acc.is_main_process, cfg.train.max_steps,
                                       ctx.state.step) as bar:
        while ctx.state.step < cfg.train.max_steps:
            logs = rl_step(ctx)
            history.append(logs)
            if acc.is_main_process and (logs["step"] % cfg.train.log_every == 0 or logs["step"] == cfg.train.max_steps):
                with open(out / "metrics.jsonl", "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(logs) + "\n")
                for k, v in logs.items():
                    if writer is not None and k != "step" and isinstance(v, int | float) and math.isfinite(v):
                        writer.add_scalar(k, v, logs["step"])
            bar.advance(logs)
            if cfg.train.save_every and ctx.state.step % cfg.train.save_every == 0:
                _save(ctx, out)
            if stop.signal:
                break
    if writer is not None:
        writer.close()
    if stop.signal or ctx.state.step == cfg.train.max_steps:
        _save(ctx, out)
    after = {}
    if not stop.signal:
        export_model(acc, ctx.policy, ctx.tok, out)
        after = heldout_reward(ctx, eval_rows)
    payload = {"recipe": "rl", "advantage": cfg.advantage.type, "reward": cfg.reward.type, "steps": ctx.state.step,
               "optimizer_steps": ctx.state.opt_steps, "interrupted": stop.signal is not None,
               "signal": stop.signal, "reward_failures": ctx.state.failures,
               "heldout_before": ctx.state.heldout_before, "heldout_after": after,
               "last": history[-1] if history else {}, "output_dir": str(out)}
    write_summary(acc, out, payload)
    if cfg.train.report and not stop.signal and acc.is_main_process:
        from alignkit.train.rl_report import write_report

        payload["report"] = str(write_report(out, payload))
    return payload
