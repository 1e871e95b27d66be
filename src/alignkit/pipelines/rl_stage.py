"""A demo-sized GRPO stage with the built-in verifier reward (for ``alignkit demo`` and experiments).

``grpo_stage(model, prompts, heldout, out_dir)`` runs ``alignkit rl`` from ``model`` on verifiable-
instruction prompt rows (``{"id", "prompt", "constraint"}``), with GRPO (no critic), KL as a k3 loss term
and the held-out greedy pass rate before/after (``summary["heldout_before" / "heldout_after"]["reward_mean"]``).
Everything is an ordinary :class:`alignkit.train.rl.RLConfig`; ``overrides`` (``key.sub=value``) change any
field. The equivalent command line is ``alignkit rl --config configs/rl_grpo_smollm2.yaml`` plus the
overrides this function builds (see :func:`grpo_stage_overrides`).
"""

from __future__ import annotations

from typing import Any


def grpo_stage_overrides(model: str, prompts: str, heldout: str | None, out_dir: str, *,
                         prompts_per_step: int = 16, n: int = 4, steps: int = 3, max_new_tokens: int = 48,
                         lr: float = 2e-6, precision: str = "auto", seed: int = 0) -> list[str]:
    """The ``key=value`` settings of the stage (a GRPO run with the verifier reward)."""
    settings = {
        "model.name_or_path": model, "data.train": prompts, "data.eval": heldout if heldout else "null",
        "data.eval_max_new_tokens": 64, "rollout.prompts_per_step": prompts_per_step, "rollout.n": n,
        "rollout.max_new_tokens": max_new_tokens, "rollout.temperature": 1.0, "rollout.batch_size": 64,
        "reward.type": "verifier", "reward.verifier": "verifiable", "reward.normalize": "false",
        "reward.clip": "null", "advantage.type": "grpo", "critic": "null", "kl.mode": "loss",
        "kl.estimator": "k3", "kl.coef": 0.04, "ppo.epochs": 1, "ppo.num_minibatches": 2,
        "ppo.micro_batch_size": 8, "train.max_steps": steps, "train.lr": lr, "train.warmup_steps": 0,
        "train.precision": precision, "train.seed": seed, "train.output_dir": out_dir, "train.progress": "false",
    }
    return [f"{k}={v}" for k, v in settings.items()]


def grpo_stage(model: str, prompts: str, heldout: str | None, out_dir: str,
               overrides: list[str] | tuple[str, ...] = (), **kw: Any) -> dict[str, Any]:
    """Run the stage; returns the ``alignkit rl`` summary (``output_dir`` holds the model and report.md)."""
    from alignkit.config import load_config
    from alignkit.train.rl import RLConfig, train_rl

    cfg = load_config(RLConfig, None, [*grpo_stage_overrides(model, prompts, heldout, out_dir, **kw), *overrides])
    return train_rl(cfg)
