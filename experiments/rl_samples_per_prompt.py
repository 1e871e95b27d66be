"""Samples per prompt (RLHF-scaling, METHODS §5): held-out pass rate vs n and vs compute at a fixed prompt set.

    export OMP_NUM_THREADS=1
    flock /tmp/alignkit-heavy.lock timeout 600 .venv/bin/python experiments/rl_compare.py \
        --start /tmp/lead/demo64/sft --work /tmp/s3rl/work --arms grpo_n2,grpo_n4,grpo_n8,ppo_n1,ppo_n4 --budget-s 400
    .venv/bin/python experiments/rl_samples_per_prompt.py --start /tmp/lead/demo64/sft --work /tmp/s3rl/work

The same training prompts (``--prompts``, one pass: ``--steps`` x ``--prompts-per-step``), start model,
learning rate and token budget as ``rl_compare.py`` (whose cached runs it shares); only n changes.
n >= 2: GRPO (``configs/rl_grpo_smollm2.yaml``). n = 1: ``alignkit rl`` refuses GRPO/RLOO (a group of
one has no baseline), so n = 1 runs PPO with a critic and GAE (``configs/rl_ppo_smollm2.yaml``); PPO at
n = 4 is shown beside it so the n = 1 point is compared within its own method. Compute: sampled
response tokens and the RL steps' wall time (rollout + update) on the shared 2-core CPU.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import rl_compare as C  # noqa: E402

GRPO = ("grpo_n2", "grpo_n4", "grpo_n8")
PPO = ("ppo_n1", "ppo_n4")


def plot(start: dict, rows: list[dict], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = {r["arm"]: r for r in rows}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    xs = (("n (samples per prompt)", lambda r: int(r["arm"].split("_n")[1])),
          ("sampled response tokens", lambda r: r["sampled_tokens"]),
          ("RL wall time (s, rollout + update)", lambda r: r["train_s"]))
    for ax, (label, x) in zip(axes, xs, strict=True):
        for arms, style, name in ((GRPO, "o-", "GRPO"), (PPO, "s--", "PPO (critic, GAE)")):
            pts = [by[a] for a in arms if a in by]
            ax.errorbar([x(r) for r in pts], [r["greedy_pass_rate"] for r in pts],
                        yerr=[C.binomial_se(r["greedy_pass_rate"], r["heldout_n"]) for r in pts],
                        fmt=style, capsize=3, label=name)
        ax.axhline(start["greedy_pass_rate"], color="grey", ls=":", label="start model")
        ax.set_xlabel(label)
        ax.set_ylabel("held-out greedy pass rate")
        ax.grid(alpha=0.3)
    axes[0].set_xscale("log", base=2)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = C.build_parser(__doc__)
    ap.set_defaults(results=str(C.REPO / "experiments/results/rl_samples_per_prompt"))
    args = ap.parse_args(argv)
    C.setup(args)
    command = "python experiments/rl_samples_per_prompt.py " + " ".join(argv if argv is not None else sys.argv[1:])
    result = C.write_report(args, [*GRPO, *PPO], Path(args.results),
                            "Samples per prompt: GRPO n = 2, 4, 8 and PPO n = 1, 4 at a fixed prompt set", command)
    plot(result["start_eval"], result["arms"], Path(args.results) / "samples_per_prompt.png")
    with open(Path(args.results) / "results.md", "a") as f:
        f.write("\n![held-out pass rate vs n and vs compute](samples_per_prompt.png)\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
