"""The LongReward pipeline's report: ``report.md`` plus three PNG plots beside it.

* ``scores_distribution.png`` — histograms of the four dimension scores and the reward over every
  successfully scored sampled response;
* ``pair_gaps.png`` — per pair, chosen minus rejected for the reward and for each dimension;
* ``before_after.png`` — mean judge scores of the policy's greedy answers to the held-out prompts,
  before and after training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alignkit.judge.longreward import DIMENSIONS

_KEYS = (*DIMENSIONS, "reward")


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


def _md_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def plot_score_distributions(scored: list[dict], path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in scored if r.get("status") == "scored"]
    if not ok:
        return False
    fig, axes = plt.subplots(1, 5, figsize=(16, 3.2), sharey=True)
    for ax, key in zip(axes, _KEYS, strict=True):
        vals = [r["reward"] if key == "reward" else r["scores"][key] for r in ok]
        # half-point bins centred on 0, 0.5, ..., 10: integer ratings and expected values both show
        ax.hist(vals, bins=[0.5 * i - 0.25 for i in range(22)], color="#4c72b0" if key != "reward" else "#c44e52")
        ax.set_title(f"{key} (mean {sum(vals) / len(vals):.2f})", fontsize=10)
        ax.set_xlim(-0.3, 10.3)
        ax.set_xlabel("score (0-10)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("responses")
    fig.suptitle(f"judge scores of {len(ok)} sampled responses", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def plot_pair_gaps(pairs: list[dict], path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not pairs:
        return False
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(pairs) + 2), 3.6))
    width = 0.8 / len(_KEYS)
    for j, key in enumerate(_KEYS):
        gaps = []
        for p in pairs:
            if key == "reward":
                gaps.append(p["chosen_reward"] - p["rejected_reward"])
            else:
                gaps.append(p["chosen_scores"][key] - p["rejected_scores"][key])
        ax.bar([i + j * width for i in range(len(pairs))], gaps, width, label=key)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(pairs))])
    ax.set_xticklabels([str(p["prompt_id"]) for p in pairs], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("chosen - rejected")
    ax.set_title("score gaps of the preference pairs", fontsize=10)
    ax.legend(fontsize=8, ncol=5)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def plot_before_after(before: dict, after: dict, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if before.get("scored", 0) == 0 and after.get("scored", 0) == 0:
        return False
    fig, ax = plt.subplots(figsize=(7, 3.4))
    xs = range(len(_KEYS))
    ax.bar([x - 0.2 for x in xs], [before.get(k) or 0 for k in _KEYS], 0.4, label="before")
    ax.bar([x + 0.2 for x in xs], [after.get(k) or 0 for k in _KEYS], 0.4, label="after")
    ax.set_xticks(list(xs))
    ax.set_xticklabels(_KEYS)
    ax.set_ylim(0, 10)
    ax.set_ylabel("mean judge score")
    ax.set_title("held-out prompts: greedy answers before vs after training", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def write_report(out: Path, results: dict[str, Any], scored: list[dict], pairs: list[dict]) -> Path:
    """Write ``report.md`` (and its plots) from the pipeline's results; returns the report path."""
    lines = [
        *_header_section(results),
        *_scores_section(out, results, scored),
        *_pairs_section(out, results, pairs),
        *_training_section(results),
        *_before_after_section(out, results),
        *_files_section(),
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _header_section(results: dict[str, Any]) -> list[str]:
    cfg = results["config"]
    reused = results.get("reused_stages", [])
    return [
        "# LongReward pipeline report",
        "",
        f"Policy `{cfg['policy']}`, judge `{cfg['judge']['spec']}`, {results['prompts']['train']} training "
        f"prompts x K={cfg['sampling']['k']} samples, {results['prompts']['eval']} held-out prompts. "
        f"Wall time of this run {results.get('total_seconds', 0):.0f} s"
        + (f" (stages reused from an earlier run: {', '.join(reused)})." if reused else "."),
        "",
        "## Stages",
        "",
        _md_table(["stage", "seconds", ""],
                  [[k, v, "reused" if k in reused else ""] for k, v in results.get("stage_seconds", {}).items()]),
        "",
    ]


def _scores_section(out: Path, results: dict[str, Any], scored: list[dict]) -> list[str]:
    s, mode = results["scores"], results["config"]["scorer"].get("force_format", "off")
    lines = [
        "## Judge scores of the sampled responses",
        "",
        f"{s['scored']} of {s['n']} responses scored on all four dimensions; {s['failed']} recorded as "
        "failed (unparseable after every attempt, or a call that failed) and left out of the pairs.",
        "",
        _md_table(["", *_KEYS], [["mean", *[s[k] for k in _KEYS]]]),
    ]
    if mode != "off":
        lines += [
            "",
            f"Weak-judge mode `force_format: {mode}` (not in the paper): the judge's answers were started "
            "with the format cue"
            + (" and ratings are expectations under its next-token distribution" if mode == "expected" else "")
            + "; see docs/longreward.md.",
        ]
    failures: dict[str, int] = {}
    for r in scored:
        for f in r.get("failures", []):
            key = f"{f['dimension']} / {f['stage']}"
            failures[key] = failures.get(key, 0) + 1
    if failures:
        lines += ["", "Failures by dimension / stage:", "",
                  _md_table(["dimension / stage", "responses"], [[k, v] for k, v in sorted(failures.items())])]
    if plot_score_distributions(scored, out / "scores_distribution.png"):
        lines += ["", "![per-dimension score distributions](scores_distribution.png)"]
    for key in ("judge_usage_scoring", "judge_usage_evaluation"):
        if key in results:
            u = results[key]
            lines += [
                "",
                f"Judge usage ({key.split('_')[-1]}): {u['calls']} calls, {u['cache_hits']} cache hits, "
                f"{u['prompt_tokens']} prompt + {u['completion_tokens']} completion tokens, "
                f"{u['transient_retries']} transport retries, {u['parse_retries']} parse retries, "
                f"{u['parse_failures']} unparseable after all attempts.",
            ]
    return lines


def _pairs_section(out: Path, results: dict[str, Any], pairs: list[dict]) -> list[str]:
    p, min_scored = results["pairs"], results["config"]["pairs"]["min_scored"]
    lines = [
        "",
        "## Preference pairs",
        "",
        f"{p['pairs']} pairs and {p['kway_rows']} K-way rows from {p['prompts']} prompts: "
        f"{p['skipped_too_few_scored']} skipped (fewer than {min_scored} scored responses), "
        f"{p['all_tied']} with all rewards tied, {p['identical_texts']} with identical best and worst texts; "
        f"ties broken by sampling order: {p['best_tie_broken']} best, {p['worst_tie_broken']} worst.",
        "",
    ]
    if pairs:
        rows = [[q["prompt_id"], q["chosen_id"], q["rejected_id"], q["chosen_reward"], q["rejected_reward"],
                 q["chosen_reward"] - q["rejected_reward"]] for q in pairs]
        lines.append(_md_table(["prompt", "chosen", "rejected", "chosen reward", "rejected reward", "gap"], rows))
    if plot_pair_gaps(pairs, out / "pair_gaps.png"):
        lines += ["", "![score gaps of the pairs](pair_gaps.png)"]
    return lines


def _training_section(results: dict[str, Any]) -> list[str]:
    tr, cfg = results.get("training"), results["config"]
    if not tr:
        return []
    return [
        "",
        "## Training",
        "",
        f"`{cfg['training']['loss']['type']}` with NLL weight {cfg['training']['nll_weight']} on "
        f"{tr.get('data', {}).get('kept', '?')} rows: "
        f"{tr.get('steps')} optimizer steps, final loss {_fmt(tr.get('final_loss'))}. "
        f"Model: `{tr.get('output_dir')}`.",
    ]


def _before_after_section(out: Path, results: dict[str, Any]) -> list[str]:
    ev = results.get("evaluation", {})
    lines: list[str] = []
    if ev.get("judge_before") or ev.get("mini_before"):
        lines += ["", "## Before / after", ""]
    if ev.get("judge_before"):
        b, a = ev["judge_before"], ev["judge_after"]
        rows = [
            [k, b.get(k), a.get(k), (a[k] - b[k]) if a.get(k) is not None and b.get(k) is not None else None]
            for k in _KEYS
        ]
        rows.append(["scored / held-out prompts", f"{b['scored']}/{b['n']}", f"{a['scored']}/{a['n']}", None])
        lines += [
            "Judge scores of greedy answers to the held-out prompts (same judge, same cache):",
            "",
            _md_table(["metric", "before", "after", "change"], rows),
        ]
        if plot_before_after(b, a, out / "before_after.png"):
            lines += ["", "![before vs after](before_after.png)"]
    if ev.get("mini_before") and ev.get("mini_after"):
        mb, ma = ev["mini_before"], ev["mini_after"]
        rows = [[t, mb["tasks"].get(t), ma["tasks"].get(t)] for t in mb["tasks"]]
        rows.append(["task mean", mb.get("task_mean"), ma.get("task_mean")])
        lines += ["", "Offline mini suite (alignkit eval --suite mini):", "", _md_table(["task", "before", "after"], rows)]
    return lines


def _files_section() -> list[str]:
    return [
        "",
        "## Files",
        "",
        "`prompts_train.jsonl`, `prompts_eval.jsonl`, `samples.jsonl`, `scored.jsonl` (scores, rationales, "
        "failures), `pairs.jsonl`, `kway.jsonl`, `model/`, `eval_*_answers.jsonl`, `eval_scored.jsonl`, "
        "`judge_cache.sqlite`, `results.json`, `config.yaml`.",
        "",
    ]
