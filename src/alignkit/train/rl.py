"""Online RLHF: ``alignkit rl`` -- PPO (critic + GAE), GRPO and RLOO with ChatGLM-RLHF's stabilisers.

One RL step, top to bottom (:func:`rl_step`):

1. **rollout** -- ``rollout.prompts_per_step`` prompts (a seeded permutation of the prompt file per
   epoch; the position is the step number) x ``rollout.n`` samples from the policy's own weights
   through the shared engine (``rollout.backend: vllm``: one vLLM engine that receives the current
   policy weights before every generation), each sample seeded from (seed, step, prompt position);
2. **score** -- the reward (verifier | model | judge | sum). A reward that cannot be computed is NaN:
   the sample is masked and counted, never scored 0; a step with too many fails stops. Optional
   ChatGLM-RLHF stabilisers: reference baseline ``r(x,y) - r(x,y_ref)`` (``y_ref`` = the reference
   policy's greedy answer, computed once per prompt; a failed one is retried the next time) and running
   normalisation (std floored at ``reward.std_floor``) + clipping;
3. **old log-probs, reference log-probs, values** (no gradient);
4. **advantages** -- ``gae`` (per-token rewards with the KL penalty, critic), ``grpo`` (group mean/std
   over the n samples of a prompt) or ``rloo`` (leave-one-out), the KL penalty added per token after the
   group baseline; KL either in the reward or a loss term;
5. **PPO** -- ``ppo.epochs`` passes over ``ppo.num_minibatches`` minibatches, one optimizer step each;
   token sums divided by the token (or sequence) count of the whole minibatch over accumulation and
   processes (``alignkit.losses.policy``); optional PTX loss on SFT rows with weight ``ptx.coef``;
6. **log / checkpoint** -- through the shared loop (``alignkit.train.loop.drive``): metrics.jsonl + trackers;
   atomic checkpoints holding policy, critic, optimizers, schedulers, RNG, running reward statistics,
   reference-baseline cache and step.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from alignkit.losses import policy as P
from alignkit.train.rl_config import RLConfig
from alignkit.train.rl_rollout import (
    behaviour_logps,
    collate_samples,
    read_prompt_rows,
    response_mask,
    rollout,
    to_response_layout,
)
from alignkit.train.rl_setup import (
    Ctx,
    RewardFailureError,
    build_run,
    check_runtime,
    gather,
    gsum,
    policy_engine,
    resume_run,
    save,
)
from alignkit.train.rl_update import importance_correction, ppo_update


# ---------------------------------------------------------------------------------- 2. score
def score(ctx: Ctx, samples) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """Raw rewards, the rewards the update uses (baseline, normalisation, clipping), and metrics."""
    cfg, st = ctx.cfg.reward, ctx.state
    rows = [ctx.rows[s.prompt_index] for s in samples]
    raw = torch.tensor(ctx.reward_fn(rows, samples), dtype=torch.float64)
    used = raw.clone()
    retried = 0
    if cfg.reference_baseline:
        ref, retried = _ref_rewards(ctx, [s.prompt_index for s in samples])
        used = used - torch.tensor(ref, dtype=torch.float64)
    everything = gather(ctx.acc, used)
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
        std = max(math.sqrt(m2 / count), cfg.std_floor) if count else 1.0
        used = P.normalize_rewards(used, mean, std, cfg.clip, shift_mean=not cfg.reference_baseline)
    elif cfg.clip is not None:
        used = used.clamp(-cfg.clip, cfg.clip)
    raw_all = gather(ctx.acc, raw)
    raw_ok = raw_all[torch.isfinite(raw_all)]
    metrics = {"reward/mean": float(raw_ok.mean()) if raw_ok.numel() else math.nan,
               "reward/failed": failed,
               "reward/used_mean": float(ok.mean()) if ok.numel() else math.nan}
    if cfg.reference_baseline:
        (metrics["reward/ref_retries"],) = gsum(ctx.acc, float(retried))
    return raw, used.float(), metrics


def _ref_rewards(ctx: Ctx, indices: list[int]) -> tuple[list[float], int]:
    """r(x, y_ref) per prompt index, y_ref the reference policy's greedy answer, and how many prompts were
    retried. The prompts without a cached value are answered in one batch (with vLLM: after loading the
    reference's weights into the engine) and scored; a finite score is cached for the run (the cache is part
    of the run state), a failed one (NaN) is not: it masks the prompt's samples of this step only, and the
    next step that meets the prompt answers and scores it again (a retry)."""
    from alignkit.generate.engine import SamplingParams

    st = ctx.state
    new = sorted({i for i in indices if str(i) not in st.ref_rewards})
    now: dict[int, float] = {}
    retried = sum(str(i) in st.ref_failures for i in new)
    if new:
        engine = policy_engine(ctx, ctx.reference.model)
        params = SamplingParams(max_new_tokens=ctx.cfg.rollout.max_new_tokens, temperature=0.0)
        y_ref = rollout(engine, ctx.rows, new, [0] * len(new), params, 0, 0)
        for i, r in zip(new, ctx.reward_fn([ctx.rows[i] for i in new], y_ref), strict=True):
            now[i] = r
            if math.isfinite(r):
                st.ref_rewards[str(i)] = r
                st.ref_failures.pop(str(i), None)
            else:
                st.ref_failures[str(i)] = st.ref_failures.get(str(i), 0) + 1
    st.ref_retries += retried
    return [st.ref_rewards.get(str(i), now.get(i, math.nan)) for i in indices], retried


# --------------------------------------------------------------- 3. old / reference log-probs, values
@torch.no_grad()
def rollout_tensors(ctx: Ctx, samples) -> dict[str, torch.Tensor]:
    """Response-layout ``(B, L)`` tensors: response mask, behaviour (the engine's), old and reference
    log-probs, old values."""
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
    if any(s.behaviour_logps is not None for s in samples):  # from the engine (hand-made samples carry none)
        out["behaviour_logps"] = behaviour_logps(samples, length, dev)
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
            s, s2, n = gsum(acc, float(adv[mask].sum()), float((adv[mask] ** 2).sum()), float(mask.sum()))
            mean, std = P.moments(torch.tensor(s), torch.tensor(s2), torch.tensor(n))
            adv = P.whiten(adv, mask, mean.float(), std.float())
    else:
        # the scores are normalised within their group first; the KL penalty is added per token afterwards,
        # so it is never divided by the group's reward spread (an all-pass group keeps |A| ~ beta * KL)
        groups, ok = scores.view(-1, cfg.rollout.n), valid.view(-1, cfg.rollout.n)
        fn = P.rloo_advantages if cfg.advantage.type == "rloo" else (
            lambda s, v: P.group_advantages(s, v, scale=cfg.advantage.scale_std))
        per_seq = fn(groups, ok).flatten()
        usable = (ok.sum(-1, keepdim=True) >= 2).expand_as(ok).flatten()  # a lone valid sample has no baseline
        mask = mask & usable[:, None]
        adv = P.group_advantages_with_kl(per_seq, kl_tok, mask, beta)
    t["mask"], t["adv"] = mask, adv
    kl_sum, n_valid, masked = gsum(acc, float(kl_tok.sum()), float(valid.sum()), float((~mask.any(-1)).sum()))
    return {"kl/ref_k1_per_sample": kl_sum / max(n_valid, 1), "samples/masked": masked}


# ------------------------------------------------------------------------------- one RL step
def rl_step(ctx: Ctx) -> dict[str, float]:
    from alignkit.generate.engine import SamplingParams
    from alignkit.train.loop import step_indices

    cfg, acc, st = ctx.cfg, ctx.acc, ctx.state
    t0, sync0 = time.perf_counter(), ctx.sync_s
    per_proc = cfg.rollout.prompts_per_step // acc.num_processes
    order = step_indices(len(ctx.rows), st.step, cfg.rollout.prompts_per_step, cfg.train.seed)
    lo = acc.process_index * per_proc
    params = SamplingParams(max_new_tokens=cfg.rollout.max_new_tokens, temperature=cfg.rollout.temperature,
                            top_p=cfg.rollout.top_p, top_k=cfg.rollout.top_k, n=cfg.rollout.n,
                            sampled_logprobs=True)
    policy_hf = acc.unwrap_model(ctx.policy).model
    samples = rollout(policy_engine(ctx, policy_hf), ctx.rows, order[lo : lo + per_proc],
                      list(range(lo, lo + per_proc)), params, cfg.train.seed, st.step)
    policy_hf.train()
    t_gen = time.perf_counter() - t0
    raw, used, logs = score(ctx, samples)
    t = rollout_tensors(ctx, samples)
    logs.update(advantages(ctx, t, used))
    logs.update(importance_correction(ctx, t))
    logs.update(ppo_update(ctx, samples, t))
    lens = torch.tensor([len(s.response_ids) for s in samples], dtype=torch.float64)
    trunc = float(sum(s.finish_reason == "length" for s in samples))
    n_all, len_sum, trunc_sum = gsum(acc, float(len(samples)), float(lens.sum()), trunc)
    logs.update({"response/length_mean": len_sum / n_all, "response/truncated_frac": trunc_sum / n_all})
    if ctx.critic is not None:
        logs["value/explained_variance"] = _explained_variance(acc, t)
    st.step += 1
    logs.update({"step": st.step, "loss": logs.get("loss/policy", math.nan), "lr": ctx.sched.get_last_lr()[0],
                 "time/generate_s": round(t_gen, 3), "time/step_s": round(time.perf_counter() - t0, 3)})
    if ctx.engine is not None:  # vllm: copying the policy (and, for new y_ref prompts, the reference) in
        logs["time/weight_sync_s"] = round(ctx.sync_s - sync0, 3)
    return logs


def _explained_variance(acc, t) -> float:
    m = t["mask"]
    ret, d = t["returns"][m].double(), (t["returns"] - t["values"])[m].double()
    n, s_r, s_r2, s_d, s_d2 = gsum(acc, float(m.sum()), float(ret.sum()), float((ret**2).sum()),
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
    samples = rollout(policy_engine(ctx, hf), rows, list(range(len(rows))), list(range(len(rows))), params, 0, 0)
    hf.train()
    scores = torch.tensor(ctx.reward_fn(rows, samples), dtype=torch.float64)
    ok = torch.isfinite(scores)
    return {"n": len(rows), "reward_mean": float(scores[ok].mean()) if ok.any() else math.nan,
            "failed": int((~ok).sum()), "response_length_mean": sum(len(s.response_ids) for s in samples) / len(rows),
            "examples": [{"prompt": str(r["prompt"])[:200], "response": s.text[:300], "reward": float(v)}
                         for r, s, v in list(zip(rows, samples, scores.tolist(), strict=True))[:4]]}


def train_rl(cfg: RLConfig, resume: bool = False) -> dict[str, Any]:
    """Run the recipe; returns the run summary (also written to ``output_dir/summary.json``)."""
    from alignkit.train.checkpoint import export_model
    from alignkit.train.inloop_eval import InLoopEvals, finish
    from alignkit.train.loop import drive
    from alignkit.train.run import (
        make_accelerator,
        prepare_output,
        resolve_run_precision,
        seed_everything,
        write_summary,
    )

    prec = resolve_run_precision(cfg.train.precision)
    acc = make_accelerator(prec.precision)
    check_runtime(cfg, acc)
    seed_everything(cfg.train.seed)
    ctx = build_run(cfg, acc)
    eval_rows = read_prompt_rows(cfg.data.eval, needs_constraint=cfg.reward.verifier == "verifiable"
                                 and cfg.reward.type in ("verifier", "sum")) if cfg.data.eval else []
    # train.eval: greedy answers from the live policy through the rollouts' engine (vLLM when rollouts use it)
    inloop = InLoopEvals(cfg.train.eval, lambda hf: policy_engine(ctx, hf), acc.autocast, cfg.train.output_dir,
                         acc.device, acc.num_processes)
    out = prepare_output(acc, cfg, cfg.train.output_dir)
    if resume:
        resume_run(ctx, out)
    else:
        ctx.state.heldout_before = heldout_reward(ctx, eval_rows)
    result = drive(cfg.train, acc, out, cfg.train.max_steps, ctx.state.step, resume, lambda: rl_step(ctx),
                   lambda: save(ctx, out), "rl", lambda logs: f"reward {logs.get('reward/mean', math.nan):.3f}",
                   (lambda: inloop(acc.unwrap_model(ctx.policy).model)) if inloop else None)
    after = {}
    if not result.interrupted:
        export_model(acc, ctx.policy, ctx.tok, out)
        after = heldout_reward(ctx, eval_rows)
    payload = {"recipe": "rl", "precision": prec.as_dict(), "advantage": cfg.advantage.type,
               "reward": cfg.reward.type, "steps": ctx.state.step, "processes": acc.num_processes,
               "optimizer_steps": ctx.state.opt_steps, "interrupted": result.interrupted,
               "signal": result.signal, "reward_failures": ctx.state.failures,
               "reference_baseline_retries": ctx.state.ref_retries,
               "heldout_before": ctx.state.heldout_before, "heldout_after": after,
               "last": result.history[-1] if result.history else {}, "output_dir": str(out)}
    finish(inloop, out, payload, acc.is_main_process)
    write_summary(acc, out, payload)
    if cfg.train.report and not result.interrupted and acc.is_main_process:
        from alignkit.train.rl_report import write_report

        payload["report"] = str(write_report(out, payload))
    return payload
