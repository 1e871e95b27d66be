"""``report.md`` and PNG plots of an ``alignkit rl`` run, from its metrics.jsonl and summary."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

PANELS = [
    ("reward/mean", "reward (raw, mean over samples)"),
    ("kl/ref_k1_per_sample", "KL to reference (k1, per sample)"),
    ("response/length_mean", "response length (tokens)"),
    ("policy/entropy", "policy entropy (per token)"),
    ("policy/clipfrac", "clip fraction"),
    ("loss/value", "value loss"),
    ("value/explained_variance", "explained variance"),
    ("loss/policy", "policy loss"),
]


def _fmt(x: Any) -> str:
    return f"{x:.4g}" if isinstance(x, float) and math.isfinite(x) else str(x)


def plot(logs: list[dict], before: dict, after: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(k, t) for k, t in PANELS if any(k in x for x in logs)]
    fig, axes = plt.subplots(2, (len(panels) + 2) // 2, figsize=(3.6 * ((len(panels) + 2) // 2), 6.4))
    axes = axes.flatten()
    for ax, (key, title) in zip(axes, panels, strict=False):
        pts = [(x["step"], x[key]) for x in logs if isinstance(x.get(key), int | float) and math.isfinite(x[key])]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("RL step", fontsize=8)
        ax.grid(alpha=0.3)
    ax = axes[len(panels)]
    if before and after:
        vals = [before.get("reward_mean", math.nan), after.get("reward_mean", math.nan)]
        bars = ax.bar(["before", "after"], vals, color=["#999999", "#3b7dd8"])
        ax.bar_label(bars, fmt="%.3f", fontsize=8)
        ax.set_title(f"held-out reward, greedy (n={after.get('n')})", fontsize=9)
    else:
        ax.set_title("no held-out prompts (data.eval)", fontsize=9)
    for extra in axes[len(panels) + 1 :]:
        extra.axis("off")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def write_report(out: Path, summary: dict[str, Any]) -> Path:
    """Write ``out/report.md`` and ``out/rl_curves.png``; returns the report path."""
    metrics = out / "metrics.jsonl"
    logs = [json.loads(x) for x in metrics.read_text().splitlines()] if metrics.exists() else []
    before, after = summary.get("heldout_before") or {}, summary.get("heldout_after") or {}
    plot(logs, before, after, out / "rl_curves.png")
    lines = [f"# alignkit rl: {summary['advantage']} with a {summary['reward']} reward", "",
             f"{summary['steps']} RL steps, {summary['optimizer_steps']} optimizer steps, "
             f"{summary['reward_failures']} samples without a reward (masked, never scored 0).", "",
             "![curves](rl_curves.png)", ""]
    if before and after:
        lines += ["## Held-out prompts (greedy answers, the run's reward; verifier: pass rate)", "",
                  "| | mean reward | failed | mean length |", "| --- | --- | --- | --- |",
                  f"| before | {_fmt(before['reward_mean'])} | {before['failed']} | {_fmt(before['response_length_mean'])} |",
                  f"| after | {_fmt(after['reward_mean'])} | {after['failed']} | {_fmt(after['response_length_mean'])} |",
                  "", f"n = {after['n']} prompts.", "", "### Examples after training", ""]
        lines += [f"- **{e['prompt']}** → {e['response']!r} (reward {_fmt(e['reward'])})" for e in after["examples"]]
    if summary.get("train_eval_plot"):
        lines += ["", "## Evaluation during training (train.eval, greedy answers)", "",
                  "![evaluations](eval_curves.png)", "", "| evaluation / metric | step | value |", "| --- | --- | --- |"]
        lines += [f"| {k} | {v['step']} | {_fmt(v['value'])} |" for k, v in summary["train_eval"].items()]
    if logs:
        last = logs[-1]
        lines += ["", "## Last step", "", "| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in last.items() if isinstance(v, int | float)]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
