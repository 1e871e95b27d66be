"""The Self-Critique pipeline's report: ``report.md`` plus two PNG plots beside it.

* ``critic_scores.png`` — histograms of the critic's scores of the RFT samples (from the starting
  model) and of the DPO samples (from the RFT model);
* ``stages.png`` — held-out exact-answer accuracy, mean critic score and verifiable-instruction pass
  rate of the base, RFT and DPO models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alignkit.pipelines.longreward_report import _fmt, _md_table


def _plot_scores(results: dict[str, Any], path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {name: results[name]["scores"]["values"] for name in ("rft", "dpo") if name in results}
    if not any(series.values()):
        return False
    fig, ax = plt.subplots(figsize=(6, 3.2))
    bins = [0.5 * i + 0.75 for i in range(20)]  # half-point bins centred on 1, 1.5, ..., 10
    for (name, vals), colour in zip(series.items(), ("#4c72b0", "#c44e52"), strict=False):
        if vals:
            ax.hist(vals, bins=bins, alpha=0.6, color=colour,
                    label=f"{name} samples (n={len(vals)}, mean {sum(vals) / len(vals):.2f})")
    ax.set_xlabel("critic score (1-10)")
    ax.set_ylabel("answers")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _plot_stages(ev: dict[str, Any], path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not ev:
        return False
    tags = list(ev)
    metrics = {"exact accuracy": [ev[t]["exact_accuracy"] for t in tags]}
    if all("critic" in ev[t] and ev[t]["critic"]["mean"] is not None for t in tags):
        metrics["critic score / 10"] = [ev[t]["critic"]["mean"] / 10 for t in tags]
    if all("verifiable" in ev[t] for t in tags):
        metrics["verifiable pass rate"] = [ev[t]["verifiable"]["pass_rate"] for t in tags]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3))
    axes = axes if len(metrics) > 1 else [axes]
    for ax, (name, vals) in zip(axes, metrics.items(), strict=True):
        ax.bar(tags, vals, color="#4c72b0")
        ax.set_ylim(0, 1)
        ax.set_title(name, fontsize=10)
        for i, v in enumerate(vals):
            ax.text(i, v + 0.02, f"{v:.2f}", ha="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def write_report(out: Path, results: dict[str, Any]) -> None:
    ev = results.get("evaluation", {})
    cfg = results["config"]
    lines = [
        "# Self-Critique pipeline (Critique-RFT -> Critique-DPO)", "",
        f"Policy `{cfg['policy']}`; critic `{cfg['critic']['kind']}`"
        + (f" (`{cfg['critic']['judge']['spec']}`, force_format={cfg['critic']['critique']['force_format']})"
           if cfg["critic"]["kind"] == "judge" else "")
        + f"; {results['questions']['train']} training and {results['questions']['heldout']} held-out questions "
        f"(mathgen level {cfg['questions']['level']}); {cfg['sampling']['k']} samples per question.", "",
        "## Held-out evaluation", "",
    ]
    rows = []
    for tag, e in ev.items():
        crit = e.get("critic", {})
        ver = e.get("verifiable")
        rows.append([tag, e["n"], f"{e['correct']}/{e['n']} = {e['exact_accuracy']:.3f}", crit.get("mean"),
                     crit.get("failed"), f"{ver['passed']}/{ver['n']} = {ver['pass_rate']:.3f}" if ver else None])
    lines += [_md_table(["model", "n", "exact accuracy", "critic mean", "critic failures", "verifiable pass rate"],
                        rows), ""]
    if _plot_stages(ev, out / "stages.png"):
        lines += ["![stages](stages.png)", ""]
    lines += ["## Data", "", "RFT selection (samples of the starting model):", "",
              _md_table(list(results["rft"]["selection"]), [list(results["rft"]["selection"].values())]), "",
              f"RFT SFT rows: {results['rft']['rows']} ({results['rft']['general_rows']} general rows mixed in).", "",
              "DPO pairs (samples of the RFT model):", "",
              _md_table(list(results["dpo"]["pairs"]), [list(results["dpo"]["pairs"].values())]), ""]
    if "skipped" in results["dpo"]:
        lines += [f"**DPO skipped**: {results['dpo']['skipped']}.", ""]
    for name in ("rft", "dpo"):
        sc = results[name]["scores"]
        lines.append(f"- {name} samples: {sc['scored']} scored, {sc['failed']} critic failures (never scored), "
                     f"mean {_fmt(sc['mean'])}")
    if _plot_scores(results, out / "critic_scores.png"):
        lines += ["", "![critic scores](critic_scores.png)"]
    lines += ["", "## Stages", "", _md_table(["stage", "seconds", "reused"],
              [[k, v, k in results["reused_stages"]] for k, v in results["stage_seconds"].items()]), ""]
    (out / "report.md").write_text("\n".join(lines), encoding="utf-8")
