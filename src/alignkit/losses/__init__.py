"""Loss functions: pure functions of tensors (torch-only imports) returning ``(per_example_loss, metrics)``.

``per_example_loss`` is ``(B,)`` and unreduced; ``metrics`` holds detached ``(B,)`` tensors.
See ``docs/losses.md`` for formulas, papers and defaults.
"""

from alignkit.losses.preference import (
    chosen_nll_loss,
    dpo_loss,
    dpo_rw_loss,
    exo_loss,
    exo_pair_loss,
    ipo_loss,
    pref_log_targets,
)
from alignkit.losses.reward import (
    aggregate_step_scores,
    binary_reward_loss,
    bradley_terry_loss,
    multitask_reward_loss,
)

__all__ = [
    "aggregate_step_scores",
    "binary_reward_loss",
    "bradley_terry_loss",
    "multitask_reward_loss",
    "chosen_nll_loss",
    "dpo_loss",
    "dpo_rw_loss",
    "exo_loss",
    "exo_pair_loss",
    "ipo_loss",
    "pref_log_targets",
]
