"""GRPO with the verifier reward vs no RL: held-out verifiable-instruction pass rate before/after.

    flock /tmp/alignkit-heavy.lock .venv/bin/python experiments/rl_verifier.py --out /tmp/rl-exp \
        --steps 3 --prompts-per-step 16 --n 4

Start point: ``--model`` (default the embedded SmolLM2-135M-Instruct; pass the demo's SFT directory to start
from there). Training prompts: the shipped ``verifiable_prefs.jsonl`` prompts; held-out: the shipped
``verifiable_heldout.jsonl`` (or its first ``--heldout`` rows). "No RL" is the start model itself (the
"before" column: greedy, 64 new tokens, same verifier). Writes ``results.json`` and ``results.md`` with
the pass rates, n, and the wall time per RL step (for sizing an RL stage of ``make demo``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from alignkit.data.verifiable import DEMO_HELDOUT, DEMO_PREFS
    from alignkit.models import DEFAULT_MODEL
    from alignkit.pipelines.rl_stage import grpo_stage

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--prompts-per-step", type=int, default=16)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--lr", type=float, default=2e-6)
    ap.add_argument("--heldout", type=int, default=0, help="use the first N held-out prompts (0: all 100)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    heldout = str(DEMO_HELDOUT)
    if args.heldout:
        heldout = str(out / "heldout.jsonl")
        Path(heldout).write_text("".join(DEMO_HELDOUT.read_text().splitlines(keepends=True)[: args.heldout]))
    t0 = time.perf_counter()
    s = grpo_stage(args.model, str(DEMO_PREFS), heldout, str(out / "grpo"), prompts_per_step=args.prompts_per_step,
                   n=args.n, steps=args.steps, max_new_tokens=args.max_new_tokens, lr=args.lr, seed=args.seed)
    wall = time.perf_counter() - t0
    logs = [json.loads(x) for x in (out / "grpo" / "metrics.jsonl").read_text().splitlines()]
    result = {
        "command": "python experiments/rl_verifier.py " + " ".join(argv or __import__("sys").argv[1:]),
        "model": args.model, "heldout_n": s["heldout_after"]["n"],
        "pass_rate_before": s["heldout_before"]["reward_mean"], "pass_rate_after": s["heldout_after"]["reward_mean"],
        "steps": s["steps"], "samples": args.steps * args.prompts_per_step * args.n, "wall_s": round(wall, 1),
        "step_s": [x["time/step_s"] for x in logs], "generate_s": [x["time/generate_s"] for x in logs],
        "train_reward": [x["reward/mean"] for x in logs],
    }
    (out / "results.json").write_text(json.dumps(result, indent=1))
    md = [f"# GRPO (verifier reward) vs no RL, {args.model}", "", f"`{result['command']}`", "",
          "| | held-out pass rate (greedy) |", "| --- | --- |",
          f"| no RL (start model) | {result['pass_rate_before']:.3f} |",
          f"| GRPO, {result['steps']} steps x {args.prompts_per_step} prompts x {args.n} samples | "
          f"{result['pass_rate_after']:.3f} |", "",
          f"n = {result['heldout_n']} held-out prompts; wall {result['wall_s']} s (RL steps {result['step_s']} s, "
          f"of which generation {result['generate_s']} s); training reward per step {result['train_reward']}."]
    (out / "results.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
