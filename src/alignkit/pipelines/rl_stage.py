"""GRPO with the built-in verifier reward: the RL recipe of ``alignkit demo`` (its ``rl`` section) and of
``experiments/rl_verifier.py``.

:data:`GRPO_VERIFIER` holds the recipe's fixed settings as ordinary :class:`alignkit.train.rl.RLConfig`
keys: GRPO (no critic), the raw ``verifiable`` reward (every instruction followed, strict) on IFEval-format
prompt rows (``{"key", "prompt", "instruction_id_list", "kwargs"}``), KL as a k3 loss term.
``configs/demo.yaml`` spells the same settings out in its ``rl`` section, with the ``ifeval`` reward (the
fraction of instructions followed) instead. ``grpo_stage(model, prompts, heldout, out_dir)`` runs ``alignkit rl`` with them
from ``model``, with the held-out greedy pass rate before/after
(``summary["heldout_before" / "heldout_after"]["reward_mean"]``); ``overrides`` (``key.sub=value``) change
any field. The equivalent command line is ``alignkit rl --config configs/rl_grpo_smollm2.yaml`` plus the
overrides :func:`grpo_stage_overrides` builds.
"""

from __future__ import annotations

from typing import Any

GRPO_VERIFIER: dict[str, Any] = {
    "data": {"eval_max_new_tokens": 64},
    "rollout": {"temperature": 1.0, "batch_size": 64},
    "reward": {"type": "verifier", "verifier": "verifiable", "normalize": False, "clip": None},
    "advantage": {"type": "grpo"},
    "critic": None,
    "kl": {"mode": "loss", "estimator": "k3", "coef": 0.04},
    "ppo": {"epochs": 1, "num_minibatches": 2, "micro_batch_size": 8},
    "train": {"warmup_steps": 0, "progress": False},
}
"""The fixed part of the recipe (RLConfig keys); the step count, group size, budget and lr vary by caller."""


def grpo_stage_overrides(model: str, prompts: str, heldout: str | None, out_dir: str, *,
                         prompts_per_step: int = 16, n: int = 4, steps: int = 3, max_new_tokens: int = 48,
                         lr: float = 2e-6, precision: str = "auto", seed: int = 0) -> list[str]:
    """The ``key=value`` settings of the stage (a GRPO run with the verifier reward)."""
    import json

    settings = {  # whole sections first (a JSON mapping is a YAML value), then the keys set into them
        **GRPO_VERIFIER,
        "model.name_or_path": model, "data.train": prompts, "data.eval": heldout,
        "rollout.prompts_per_step": prompts_per_step, "rollout.n": n, "rollout.max_new_tokens": max_new_tokens,
        "train.max_steps": steps, "train.lr": lr, "train.precision": precision, "train.seed": seed,
        "train.output_dir": out_dir,
    }
    # JSON is YAML: sections, null, false and numbers parse back to themselves; strings stay text.
    return [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in settings.items()]


def grpo_stage(model: str, prompts: str, heldout: str | None, out_dir: str,
               overrides: list[str] | tuple[str, ...] = (), **kw: Any) -> dict[str, Any]:
    """Run the stage; returns the ``alignkit rl`` summary (``output_dir`` holds the model and report.md)."""
    from alignkit.config import load_config
    from alignkit.train.rl import RLConfig, train_rl

    cfg = load_config(RLConfig, None, [*grpo_stage_overrides(model, prompts, heldout, out_dir, **kw), *overrides])
    return train_rl(cfg)
