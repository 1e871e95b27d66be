"""The PPO update of ``alignkit rl``: minibatches, gradient accumulation, PTX, optimizer steps.

Normalisation: every loss is a token (or sequence) **sum** divided by the token (or sequence) count of
the whole minibatch over its micro-batches and all processes (``alignkit.losses.policy``), and the
backward is multiplied by the process count because DDP averages gradients. So a minibatch gives the
same update whether it is split 4 x 1, 1 x 4 or over 2 processes.
"""

from __future__ import annotations

import contextlib

import torch

from alignkit.losses import policy as P
from alignkit.train.rl_rollout import collate_samples, to_response_layout
from alignkit.train.rl_setup import Ctx, gsum


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
    g = dict(zip(sums, gsum(ctx.acc, *sums.values()), strict=True))
    tokens = max(g.pop("tokens", 0.0), 1.0)
    out = {k: v / tokens for k, v in g.items() if k.startswith(("policy/", "loss/"))}
    if "ptx_tokens" in g:
        out["ptx/nll"] = g["ptx_nll"] / max(g["ptx_tokens"], 1.0)
    out["grad_norm"] = sum(norms) / len(norms)
    return {**out, **first}


def importance_correction(ctx: Ctx, t: dict[str, torch.Tensor]) -> dict[str, float]:
    """Compare the behaviour log-probs mu (the engine's) with the trainer's pi_old on the tokens of the update
    (``t["mask"]``) and apply ``correction``: tis puts ``t["is_weight"]`` (``min(pi_old / mu, C)`` per token)
    on the policy-gradient term, mis removes from ``t["mask"]`` the samples whose geometric-mean ratio leaves
    ``[1/C, C]``. Metrics over all processes: ``mismatch/kl`` (token mean of k3 = rho - 1 - log rho, an
    estimate of KL(mu || pi_old)), ``mismatch/is_weight_mean`` (token mean of rho, truncated at C for tis),
    ``mismatch/clipped_frac`` (tis and none: tokens with rho > C; mis: samples masked)."""
    cfg = ctx.cfg.correction
    if "behaviour_logps" not in t:
        raise ValueError("the rollout carries no behaviour log-probs (the engine was not asked for sampled_logprobs)")
    mask, old, mu = t["mask"], t["old_logps"], t["behaviour_logps"]
    kl = P.kl_penalty(mu, old, "k3")
    weights, clipped = P.truncated_is_weights(old, mu, mask, cfg.cap)
    shown = weights if cfg.type == "tis" else torch.exp(P.behaviour_log_ratio(old, mu, mask))
    n_clip, n_out = float(clipped.sum()), float(mask.any(-1).sum())
    if cfg.type == "tis":
        t["is_weight"] = weights
    elif cfg.type == "mis":
        keep, _ = P.sequence_is_mask(old, mu, mask, cfg.cap)
        n_clip = float((mask.any(-1) & ~keep).sum())
        t["mask"] = mask & keep[:, None]
    n_tok, kl_sum, w_sum, n_clip, n_seq = gsum(ctx.acc, float(mask.sum()), float(P.masked_sum(kl, mask)),
                                               float(P.masked_sum(shown, mask)), n_clip, n_out)
    per = n_seq if cfg.type == "mis" else n_tok
    return {"mismatch/kl": kl_sum / max(n_tok, 1.0), "mismatch/is_weight_mean": w_sum / max(n_tok, 1.0),
            "mismatch/clipped_frac": n_clip / max(per, 1.0)}


def _minibatch_step(ctx: Ctx, samples, t, rows: list[int]) -> dict[str, float]:
    cfg, acc = ctx.cfg, ctx.acc
    mask = t["mask"][rows]
    n_tok, n_seq = gsum(acc, float(mask.sum()), float(mask.any(-1).sum()))
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
            w = t["is_weight"][mic] if "is_weight" in t else None
            per_tok, pm = P.ppo_policy_loss(lp, t["old_logps"][mic], t["adv"][mic], m, cfg.ppo.clip_eps, w)
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
    """One optimizer step of the policy (and the critic), through the shared loop's clipping; the policy's norm."""
    from alignkit.train.loop import clip_and_step

    where = f"step {ctx.state.step}, optimizer step {ctx.state.opt_steps}"
    norms = [clip_and_step(ctx.acc, model, opt, sched, ctx.cfg.train.max_grad_norm, where)
             for model, opt, sched in ((ctx.policy, ctx.opt, ctx.sched), (ctx.critic, ctx.critic_opt, ctx.critic_sched))
             if model is not None]
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
    (n,) = gsum(acc, float(b["loss_mask"].sum()))
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
