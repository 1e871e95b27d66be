"""Reports of an evaluation run and side-by-side comparison of two runs.

- ``results.json``: everything (config, subject identity, per-sample predictions and scores,
  per-task / per-bucket / aggregate scores, each with its signature);
- ``report.md``: the tables a human reads, with short signatures;
- ``scores_by_length.png``: score per length bucket, one line per task plus the category-averaged
  curve (LongBench README style);
- :func:`compare`: rows of two results files side by side; a row whose *setting* signature differs
  is marked (or refused with ``strict``) and the differing components are named.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from alignkit.atomic import atomic_path
from alignkit.atomic import write_atomic as atomic_write  # the name evals.cli imports
from alignkit.evals.signature import Signature, describe_difference, differing_components

PLOT_FILE = "scores_by_length.png"


def reported_numbers(results: dict[str, Any]) -> dict[str, tuple[float | None, Signature]]:
    """Every number in a results dict with its signature, keyed by a stable row name."""
    rows: dict[str, tuple[float | None, Signature]] = {}
    for name, t in results["tasks"].items():
        rows[name] = (t["score"], Signature.from_dict(t["signature"]))
        for field in ("buckets", "length_buckets"):
            for label, b in t.get(field, {}).items():
                rows[f"{name} @{label}"] = (b["score"], Signature.from_dict(b["signature"]))
    agg = results.get("aggregates", {})
    if "task_mean" in agg:
        rows["mean over tasks"] = (
            agg["task_mean"]["score"],
            Signature.from_dict(agg["task_mean"]["signature"]),
        )
    for lang, entry in agg.get("leaderboard", {}).items():
        for cat, c in entry["categories"].items():
            rows[f"{lang.upper()} {cat}"] = (c["score"], Signature.from_dict(c["signature"]))
        if entry.get("avg"):
            rows[f"{lang.upper()} Avg"] = (
                entry["avg"]["score"],
                Signature.from_dict(entry["avg"]["signature"]),
            )
    for key in ("curve", "length_curve"):
        for label, c in agg.get(key, {}).items():
            rows[f"all tasks @{label}"] = (c["score"], Signature.from_dict(c["signature"]))
    return rows


def _fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}"


def _cell(text: str) -> str:
    """Markdown table cell: a "|" splits cells even inside a code span, so escape it."""
    return text.replace("|", "\\|")


def render_markdown(results: dict[str, Any], plot_name: str | None) -> str:
    subj = results["subject"]
    lines = [
        f"# alignkit eval — {results['suite']} suite",
        "",
        f"- model: `{subj['model']['name']}` ({subj['model']['dtype']}), weights sha256 `{subj['model']['sha256'][:16]}`",
        f"- tokenizer sha256 `{subj['tokenizer']['sha256'][:16]}`, chat template sha256 "
        f"`{(subj['chat_template']['sha256'] or 'none')[:16]}`",
        f"- max input tokens {results['max_input_tokens']} (middle truncation), context window {results['context_window']}",
        f"- alignkit {results['alignkit_version']}, {len(results['samples'])} samples, {results['elapsed_seconds']} s",
        "",
        "## Scores",
        "",
        "| task | metric | n | truncated | score | signature |",
        "| --- | --- | ---: | ---: | ---: | --- |",
    ]
    for name, t in results["tasks"].items():
        trunc = sum(1 for s in results["samples"] if s["task"] == name and s["truncated"])
        lines.append(
            f"| {name} | {t['metric']} | {t['n']} | {trunc} | {_fmt(t['score'])} | `{_cell(t['signature']['short'])}` |"
        )
    agg = results["aggregates"]
    if "task_mean" in agg:
        lines.append(f"| **mean over tasks** | | | | **{_fmt(agg['task_mean']['score'])}** | |")
    for key, title, field in (
        ("length_curve", "Score by nominal prompt length", "length_buckets"),
        ("curve", "Score by LongBench-E length bucket (record `length`)", "buckets"),
    ):
        if key not in agg:
            continue
        labels = list(agg[key])
        lines += [
            "",
            f"## {title}",
            "",
            "| task | " + " | ".join(labels) + " |",
            "| --- |" + " ---: |" * len(labels),
        ]
        for name, t in results["tasks"].items():
            cells = [_fmt(t.get(field, {}).get(label, {}).get("score")) for label in labels]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append(
            "| **category-averaged** | " + " | ".join(_fmt(agg[key][lb]["score"]) for lb in labels) + " |"
        )
    for lang, entry in agg.get("leaderboard", {}).items():
        lines += [
            "",
            f"## LongBench categories ({lang.upper()})",
            "",
            "| category | tasks | score |",
            "| --- | --- | ---: |",
        ]
        for cat, c in entry["categories"].items():
            lines.append(f"| {cat} | {', '.join(c['members'])} | {_fmt(c['score'])} |")
        if entry.get("avg"):
            lines.append(f"| **Avg (6 categories)** | | **{_fmt(entry['avg']['score'])}** |")
        else:
            lines.append(f"| Avg | not reported: missing {', '.join(entry['missing_categories'])} | — |")
    if plot_name:
        lines += ["", f"![score by length]({plot_name})"]
    lines += [
        "",
        "## Signatures",
        "",
        "Two numbers are comparable only when their *setting* hashes are equal "
        "(`alignkit eval compare A/results.json B/results.json` checks this).",
        "",
        "| number | setting sha256 | full sha256 |",
        "| --- | --- | --- |",
    ]
    for name, (_, sig) in reported_numbers(results).items():
        lines.append(f"| {name} | `{sig.setting_sha256[:16]}` | `{sig.sha256[:16]}` |")
    return "\n".join(lines) + "\n"


def plot_scores(results: dict[str, Any], path: Path) -> bool:
    """Score by length bucket (nominal lengths for the mini suite, LongBench-E buckets otherwise)."""
    agg = results["aggregates"]
    key, field, xlabel = (
        ("length_curve", "length_buckets", "nominal prompt length (tokens)")
        if "length_curve" in agg
        else ("curve", "buckets", "record length (LongBench-E bucket)")
    )
    if key not in agg:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(agg[key])
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    x = list(range(len(labels)))
    n_tasks = len(results["tasks"])
    for k, (name, t) in enumerate(results["tasks"].items()):
        ys = [t.get(field, {}).get(lb, {}).get("score") for lb in labels]
        dx = 0.04 * (k - (n_tasks - 1) / 2)  # small offsets keep tasks with equal scores visible
        pts = [(xi + dx, y) for xi, y in zip(x, ys, strict=True) if y is not None]
        if pts:
            ax.plot(
                [p[0] for p in pts], [p[1] for p in pts], marker="o", linewidth=1.2, alpha=0.8, label=name
            )
    avg = [
        (xi, agg[key][lb]["score"])
        for xi, lb in zip(x, labels, strict=True)
        if agg[key][lb]["score"] is not None
    ]
    if avg:
        ax.plot(
            [p[0] for p in avg],
            [p[1] for p in avg],
            color="black",
            linewidth=2.6,
            marker="s",
            label="category-averaged",
        )
    ax.set_xticks(x, labels)
    ax.set_ylim(-3, 103)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("score (0-100)")
    ax.set_title(f"{results['subject']['model']['name']} — {results['suite']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp)
    plt.close(fig)
    return True


def write_reports(results: dict[str, Any], out_dir: Path, plot: bool = True) -> dict[str, Path]:
    """Write results.json, report.md and (optionally) the PNG; returns their paths."""
    out_dir = Path(out_dir)
    paths = {"results": out_dir / "results.json", "report": out_dir / "report.md"}
    plot_name = None
    if plot and plot_scores(results, out_dir / PLOT_FILE):
        paths["plot"] = out_dir / PLOT_FILE
        plot_name = PLOT_FILE
    atomic_write(paths["results"], json.dumps(results, ensure_ascii=False, indent=1) + "\n")
    atomic_write(paths["report"], render_markdown(results, plot_name))
    return paths


def print_summary(results: dict[str, Any], console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title=f"{results['subject']['model']['name']} — {results['suite']}")
    for col in ("task", "metric", "n", "score", "setting sha256"):
        table.add_column(col, overflow="fold")
    for name, t in results["tasks"].items():
        table.add_row(name, t["metric"], str(t["n"]), _fmt(t["score"]), t["signature"]["setting_sha256"][:16])
    if "task_mean" in results["aggregates"]:
        table.add_row(
            "[bold]mean over tasks", "", "", f"[bold]{_fmt(results['aggregates']['task_mean']['score'])}", ""
        )
    console.print(table)
    for key in ("length_curve", "curve"):
        curve = results["aggregates"].get(key)
        if curve:
            console.print("by length: " + ", ".join(f"{lb}: {_fmt(c['score'])}" for lb, c in curve.items()))
    console.print("full signatures: report.md and results.json")


# ----------------------------------------------------------------------------------- compare
def load_results(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: results file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    if not isinstance(data, dict) or data.get("format") != "alignkit-eval-results/1":
        raise ValueError(f"{path}: not an alignkit eval results file (field 'format' missing or unknown)")
    return data


def compare(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows ``{name, a, b, delta, comparable, reasons}`` for the union of both files' numbers.

    ``comparable`` is True when both have the number and their setting signatures are equal;
    otherwise ``reasons`` says why (missing on one side, or which components differ and how).
    """
    ra, rb = reported_numbers(a), reported_numbers(b)
    rows = []
    for name in list(ra) + [n for n in rb if n not in ra]:
        if name not in ra or name not in rb:
            side = "A" if name in ra else "B"
            sa = ra.get(name, (None, None))[0]
            sb = rb.get(name, (None, None))[0]
            rows.append(
                {
                    "name": name,
                    "a": sa,
                    "b": sb,
                    "delta": None,
                    "comparable": False,
                    "reasons": [f"only in {side}"],
                }
            )
            continue
        (xa, sig_a), (xb, sig_b) = ra[name], rb[name]
        diff = differing_components(sig_a, sig_b)
        reasons = [describe_difference(sig_a, sig_b, c) for c in diff if c != "aggregate"]
        if "aggregate" in diff:  # name the member numbers that differ rather than the member hashes
            reasons += _member_reasons(sig_a, sig_b, ra, rb) or [
                describe_difference(sig_a, sig_b, "aggregate")
            ]
        ok = not diff
        delta = round(xb - xa, 2) if ok and xa is not None and xb is not None else None
        rows.append({"name": name, "a": xa, "b": xb, "delta": delta, "comparable": ok, "reasons": reasons})
    return rows


def _member_reasons(sig_a: Signature, sig_b: Signature, ra: dict, rb: dict) -> list[str]:
    """For averages: which member tasks are missing or differ, and in which component."""
    ma = sig_a.components["aggregate"]["members"]
    mb = sig_b.components["aggregate"]["members"]
    out = []
    for m in sorted(set(ma) | set(mb)):
        if m not in ma or m not in mb:
            out.append(f"member {m} only in {'A' if m in ma else 'B'}")
        elif ma[m] != mb[m]:
            comps = differing_components(ra[m][1], rb[m][1]) if m in ra and m in rb else []
            out.append(f"member {m}: {', '.join(comps) or 'settings differ'}")
    return out
