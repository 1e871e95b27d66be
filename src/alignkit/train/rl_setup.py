"""Setting up and persisting an ``alignkit rl`` run: live objects, run state, reward, checkpoints.

:class:`RunState` is everything besides weights, optimizers, schedulers and RNG (which
``accelerate.save_state`` stores) that a resumed run needs: step, optimizer-step count, the running
reward statistics, the reference-baseline cache, the failure count and the held-out "before" score.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from alignkit.errors import ConfigError, UserError
from alignkit.train.rl_config import RewardConfig, RLConfig
from alignkit.train.rl_rollout import TokenLogpsForward, load_critic, read_prompt_rows


class RewardFailureError(UserError):
    """Too many samples of a step have no reward."""


@dataclass
class RunState:
    """Everything besides weights/optimizers/RNG that a resumed run must restore."""

    step: int = 0
    opt_steps: int = 0
    reward_moments: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # count, mean, M2
    ref_rewards: dict[str, float] = field(default_factory=dict)  # prompt index -> r(x, y_ref), finite only
    ref_failures: dict[str, int] = field(default_factory=dict)  # prompt index -> failed r(x, y_ref) so far
    ref_retries: int = 0  # r(x, y_ref) computed again after a failure
    failures: int = 0
    heldout_before: dict[str, Any] = field(default_factory=dict)


def build_reward(cfg: RewardConfig, device, judge_cache_path: Path | str):
    from alignkit.train import rl_rewards as R

    def part(kind: str):
        if kind == "verifier":
            return R.verifier_reward(cfg.verifier)
        if kind == "model":
            return R.model_reward(cfg.model, device)
        if kind == "remote":
            return R.remote_reward(cfg.remote_url, os.environ.get(cfg.remote_api_key_env) or None)
        from alignkit.judge.client import judge_from_config

        return R.judge_reward(judge_from_config(cfg.judge, judge_cache_path), cfg.judge_max_tokens)

    if cfg.type == "sum":
        return R.weighted_sum({k: part(k) for k in cfg.weights}, cfg.weights)
    return part(cfg.type)


def check_runtime(cfg: RLConfig, acc) -> None:
    if cfg.rollout.backend == "vllm":
        from alignkit.generate.engine import vllm_available

        ok, reason = vllm_available()
        if not ok:
            raise ConfigError(f"rollout.backend=vllm cannot be used here: {reason}; use rollout.backend=hf")
        if acc.num_processes > 1:
            raise ConfigError(f"rollout.backend=vllm runs one vLLM engine inside one training process; "
                              f"{acc.num_processes} processes (DDP / FSDP / DeepSpeed) are not supported: "
                              "launch one process or use rollout.backend=hf")
    if cfg.rollout.prompts_per_step % acc.num_processes:
        raise ConfigError(f"rollout.prompts_per_step={cfg.rollout.prompts_per_step} must divide by the "
                          f"{acc.num_processes} processes")
    local = cfg.rollout.prompts_per_step // acc.num_processes * cfg.rollout.n
    if local % cfg.ppo.num_minibatches:
        raise ConfigError(f"{local} samples per process per step do not split into ppo.num_minibatches="
                          f"{cfg.ppo.num_minibatches} equal minibatches")


def gsum(acc, *values: float) -> list[float]:
    """Sum each value over processes (float64)."""
    t = torch.tensor(values, dtype=torch.float64, device=acc.device)
    if acc.num_processes > 1:
        t = acc.reduce(t, reduction="sum")
    return t.tolist()


def gather(acc, t: torch.Tensor) -> torch.Tensor:
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
    engine: Any | None = None  # rollout.backend=vllm: the run's one VLLMEngine (hf: None)
    sync_s: float = 0.0  # seconds spent copying weights into ``engine`` so far


def policy_engine(ctx: Ctx, model):
    """An engine that generates with ``model``'s weights as they are now.

    hf: the shared HF engine wrapped around ``model`` itself (nothing to copy). vllm: the run's one engine,
    after copying ``model``'s parameters into it and resetting its prefix cache. Every generation goes
    through here, so a rollout sees the weights of the last optimizer step (or of the checkpoint after
    ``--resume``), and the reference's greedy answers see the reference's weights."""
    import time

    from alignkit.generate.engine import HFEngine

    if ctx.engine is None:
        return HFEngine(model, ctx.tok, batch_size=ctx.cfg.rollout.batch_size)
    t0 = time.perf_counter()
    ctx.engine.load_weights(model.named_parameters())
    ctx.sync_s += time.perf_counter() - t0
    return ctx.engine


def vllm_rollout_engine(cfg: RLConfig, policy, reference):
    """rollout.backend=vllm: the run's engine, built once from the policy's starting checkpoint (its weights
    are replaced before every generation by :func:`policy_engine`)."""
    from alignkit.generate.engine import make_engine

    if cfg.reward.reference_baseline:  # y_ref is generated by the same engine with the reference's weights
        shapes = [{n: tuple(p.shape) for n, p in m.named_parameters()} for m in (policy, reference)]
        if shapes[0] != shapes[1]:
            raise ConfigError("rollout.backend=vllm with reward.reference_baseline: the reference model's "
                              "parameters (names, shapes) differ from the policy's, so one engine cannot "
                              "generate for both; use rollout.backend=hf")
    return make_engine(cfg.model.name_or_path, backend="vllm", batch_size=cfg.rollout.batch_size,
                       dtype=cfg.rollout.vllm_dtype, weight_sync=True, logprobs_mode="processed_logprobs",
                       gpu_memory_utilization=cfg.rollout.vllm_gpu_memory_utilization)


def build_run(cfg: RLConfig, acc) -> Ctx:
    """Prompts, policy, frozen reference, critic, reward, optimizers and schedulers, prepared."""
    from alignkit.data.rows import read_rows
    from alignkit.data.tokenize import DataPolicy, tokenize_examples
    from alignkit.models import load_causal_lm
    from alignkit.train.loop import build_optimizer, build_scheduler
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
        return opt, build_scheduler(train_cfg, opt, total)

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
    reward_fn = build_reward(cfg.reward, acc.device, Path(cfg.train.output_dir) / "judge_cache.sqlite")
    engine = vllm_rollout_engine(cfg, model, reference.model) if cfg.rollout.backend == "vllm" else None
    return Ctx(cfg, acc, tok, policy, reference, critic, opt, sched, critic_opt, critic_sched, rows, reward_fn,
               ptx, RunState(), engine)


def save(ctx: Ctx, out: Path) -> Path:
    from alignkit.train import checkpoint as ckpt

    state = {**ctx.state.__dict__, "max_steps": ctx.cfg.train.max_steps}
    return ckpt.save_checkpoint(ctx.acc, out, ctx.state.step, state, ctx.cfg.train.keep_checkpoints)


def resume_run(ctx: Ctx, out: Path) -> None:
    from alignkit.train import checkpoint as ckpt

    state = ckpt.resume_checkpoint(ctx.acc, out)
    if state.pop("max_steps") != ctx.cfg.train.max_steps:
        raise ConfigError("--resume: train.max_steps differs from the checkpoint's (the LR schedule depends on it)")
    ctx.state = RunState(**state)
