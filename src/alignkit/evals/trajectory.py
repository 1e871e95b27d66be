"""``alignkit eval trajectory``: task score against LM loss over checkpoints (METHODS §10b).

For every checkpoint: the LM loss on a held-out corpus (mean token NLL in nats, ``log`` of the CoTK
perplexity of :func:`alignkit.evals.cotk.perplexity`) and the score of each task of the offline mini
suite (the LongBench protocol of ``alignkit eval``). Then, per task, a score-vs-loss plot with the
chance level marked, and the loss threshold at which the task leaves chance level.

Threshold rule (:func:`emergence_threshold`): walk the checkpoints from the highest loss to the
lowest; the task has *emerged* at the first checkpoint from which every lower-loss checkpoint scores
above ``chance + margin``. The threshold is reported as the bracket between that checkpoint's loss
and the next higher loss (where the score was still at chance), with its midpoint. ``always``: above
chance at every checkpoint (threshold above the highest loss seen); ``never``: no lower-loss run of
above-chance scores (threshold below the lowest loss seen, if there is one).

Chance levels (stated in the results): ``mini_passage_retrieval`` — the expected score of naming a
uniformly random paragraph, ``100 * mean(1 / paragraphs)`` over the records; every other mini task is
generative (an exact count, a UUID, an F1 against a short fact), where a random answer scores ~0, so
its chance level is 0. ``chance`` in the config overrides any of them.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, field_validator

from alignkit.config import Precision, StrictModel


class TrajectoryConfig(StrictModel):
    """``alignkit eval trajectory --checkpoints DIR ... [--tasks mini] [--corpus pydoc]``."""

    cli_variadic: ClassVar[tuple[str, ...]] = ("checkpoints",)

    checkpoints: list[str] = Field(min_length=1)
    """Model directories or training checkpoints (<run>/checkpoints/step-N, exported once under
    output_dir/exported), in any order (they are sorted by loss)."""
    tasks: list[str] = Field(default_factory=lambda: ["mini"])
    """Mini-suite task names; 'mini' = every task of the suite."""
    corpus: str = "pydoc"
    """Held-out text for the LM loss: 'pydoc' (CPython's pydoc_data.topics) or a .txt / JSONL {text} file."""
    corpus_docs: int = Field(default=8, ge=1)
    """pydoc: the last N topics in sorted order; a file: its first N documents."""
    corpus_chars: int = Field(default=2000, ge=100)
    """Characters kept from each document (bounds the loss computation)."""
    lengths: list[str] = Field(default_factory=lambda: ["1k"])
    """Mini-suite nominal lengths."""
    samples_per_length: int = Field(default=2, ge=1)
    """Mini-suite samples per task and length."""
    chance: dict[str, float] = Field(default_factory=dict)
    """Chance level per task (overrides the built-in ones, see the module docstring)."""
    margin: float = Field(default=5.0, ge=0.0)
    """A score counts as above chance when it exceeds chance + margin (score points, 0-100)."""
    batch_size: int = Field(default=4, ge=1)
    """Sequences per batch (loss and generation)."""
    dtype: Precision = "auto"
    """Weights precision for generation; auto: bf16 where the hardware multiplies bf16 natively, else fp32
    (float32/bfloat16: old spellings of fp32/bf16)."""
    output_dir: str = "runs/eval/trajectory"
    """results.json, report.md, one PNG per task, and each checkpoint's eval run."""

    @field_validator("lengths", mode="before")
    @classmethod
    def _lengths_as_text(cls, v: Any) -> Any:
        from alignkit.evals.runner import EvalConfig

        return EvalConfig._lengths_as_text(v)  # "lengths: [500, 1k]" reads as [500, "1k"]


def emergence_threshold(points: list[tuple[float, float]], chance: float, margin: float) -> dict[str, Any]:
    """Where a task leaves chance level along decreasing loss.

    ``points``: (loss, score) per checkpoint. Returns ``{"status": "emerged" | "always" | "never",
    "bracket": [low, high] | None, "threshold": midpoint | None}`` (see the module docstring).
    """
    if not points:
        raise ValueError("emergence_threshold needs at least one (loss, score) point")
    pts = sorted(points, key=lambda p: -p[0])  # highest loss (earliest) first
    above = [s > chance + margin for _, s in pts]
    first = len(pts)  # index of the first checkpoint of the final all-above run
    while first > 0 and above[first - 1]:
        first -= 1
    if first == 0:
        return {"status": "always", "bracket": None, "threshold": None, "above_from_loss": pts[0][0]}
    if first == len(pts):
        return {"status": "never", "bracket": None, "threshold": None, "at_chance_down_to_loss": pts[-1][0]}
    lo, hi = pts[first][0], pts[first - 1][0]
    return {"status": "emerged", "bracket": [lo, hi], "threshold": (lo + hi) / 2}


def chance_levels(records: dict[str, list[dict]]) -> dict[str, dict[str, Any]]:
    """Built-in chance level of each mini task, with how it was obtained."""
    out = {}
    for task, recs in records.items():
        if task == "mini_passage_retrieval":
            ks = [len(re.findall(r"^Paragraph \d+:", r["context"], re.M)) for r in recs]
            out[task] = {"chance": 100.0 * sum(1 / k for k in ks) / len(ks),
                         "how": f"100 * mean(1/paragraphs) over {len(ks)} records (random paragraph)"}
        else:
            out[task] = {"chance": 0.0, "how": "generative answer: a random guess scores ~0"}
    return out


def corpus_texts(cfg: TrajectoryConfig) -> list[str]:
    if cfg.corpus == "pydoc":
        from pydoc_data.topics import topics

        docs = [topics[k] for k in sorted(topics)[-cfg.corpus_docs :]]
    else:
        from alignkit.errors import DataError

        path = Path(cfg.corpus)
        if not path.is_file():
            raise DataError(f"corpus {path}: not 'pydoc' and not a file")
        if path.suffix == ".jsonl":
            from alignkit.generate.jsonl import read_jsonl, require_str

            docs = [require_str(row, "text", f"{path}:{line}") for line, row in read_jsonl(path)]
        else:
            docs = [d for d in path.read_text(encoding="utf-8").split("\n\n") if d.strip()]
        docs = docs[: cfg.corpus_docs]
    return [d[: cfg.corpus_chars] for d in docs]


def model_directory(ckpt: str, export_to: Path) -> str:
    """A loadable model directory: ``ckpt`` itself (config.json inside), or a training checkpoint
    (``checkpoints/step-N``) exported once to ``export_to``."""
    if (Path(ckpt) / "config.json").is_file():
        return ckpt
    if not (export_to / "config.json").is_file():
        from alignkit.train.checkpoint import checkpoint_to_hf

        checkpoint_to_hf(ckpt, export_to)
    return str(export_to)


def lm_loss(model_dir: str, texts: list[str], batch_size: int) -> dict[str, Any]:
    """Mean token NLL (nats) of ``texts`` under the checkpoint (log of the CoTK perplexity)."""
    from alignkit.evals.cotk import perplexity
    from alignkit.models import load_causal_lm, load_tokenizer

    model = load_causal_lm(model_dir)
    res = perplexity(model, load_tokenizer(model_dir), texts, batch_size=batch_size)
    return {"loss": math.log(res["perplexity"]), "tokens": res["tokens"]}


def run_trajectory(cfg: TrajectoryConfig, progress: bool = True) -> dict[str, Any]:
    """Loss and task scores per checkpoint, thresholds and plots; writes results.json and report.md."""
    import gc

    from alignkit.config import dump_config
    from alignkit.evals.mini_suite import build_suite
    from alignkit.evals.report import atomic_write
    from alignkit.evals.runner import EvalConfig, run_eval, suite_task_names

    tasks = suite_task_names("mini") if cfg.tasks == ["mini"] else list(cfg.tasks)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, out / "config.yaml")
    texts = corpus_texts(cfg)
    chance = chance_levels(build_suite(tasks, list(cfg.lengths), cfg.samples_per_length, 0))
    for task, value in cfg.chance.items():
        chance[task] = {"chance": value, "how": "given in the config"}
    rows = []
    for i, ckpt in enumerate(cfg.checkpoints):
        model_dir = model_directory(ckpt, out / "exported" / f"{i:03d}-{Path(ckpt).name}")
        loss = lm_loss(model_dir, texts, cfg.batch_size)
        ecfg = EvalConfig(model=model_dir, suite="mini", tasks=tasks, lengths=list(cfg.lengths),
                          samples_per_length=cfg.samples_per_length, batch_size=cfg.batch_size, dtype=cfg.dtype,
                          output_dir=str(out / "evals" / f"{i:03d}-{Path(ckpt).name}"), plot=False)
        res = run_eval(ecfg, progress=progress)
        rows.append({"checkpoint": ckpt, **loss, "scores": {t: res["tasks"][t]["score"] for t in tasks}})
        gc.collect()
    thresholds = {
        t: emergence_threshold([(r["loss"], r["scores"][t]) for r in rows if r["scores"][t] is not None],
                               chance[t]["chance"], cfg.margin)
        for t in tasks
    }
    results = {"corpus": {"source": cfg.corpus, "docs": len(texts), "chars_per_doc": cfg.corpus_chars},
               "margin": cfg.margin, "chance": chance, "checkpoints": rows, "thresholds": thresholds}
    plots = plot_trajectory(results, out)
    atomic_write(out / "results.json", json.dumps(results, indent=1) + "\n")
    atomic_write(out / "report.md", render_report(results, plots))
    return results


def plot_trajectory(results: dict[str, Any], out: Path) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = {}
    rows = sorted(results["checkpoints"], key=lambda r: -r["loss"])
    for task, th in results["thresholds"].items():
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.plot([r["loss"] for r in rows], [r["scores"][task] for r in rows], "o-", label=task)
        ax.axhline(results["chance"][task]["chance"], color="grey", ls="--", label="chance")
        if th["threshold"] is not None:
            ax.axvline(th["threshold"], color="red", ls=":", label=f"threshold {th['threshold']:.3f}")
        ax.invert_xaxis()  # training progress goes left to right
        ax.set_xlabel("held-out LM loss (nats/token)")
        ax.set_ylabel("score")
        ax.legend(fontsize=7)
        fig.tight_layout()
        name = f"trajectory_{task}.png"
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        paths[task] = name
    return paths


def render_report(results: dict[str, Any], plots: dict[str, str]) -> str:
    tasks = list(results["thresholds"])
    lines = ["# Score vs. LM loss", "",
             f"Held-out corpus: {results['corpus']['source']} ({results['corpus']['docs']} documents, "
             f"{results['corpus']['chars_per_doc']} characters each). Above chance = score > chance + "
             f"{results['margin']}.", "",
             "| checkpoint | loss | " + " | ".join(tasks) + " |", "|---|---|" + "---|" * len(tasks)]
    for r in sorted(results["checkpoints"], key=lambda r: -r["loss"]):
        lines.append(f"| {r['checkpoint']} | {r['loss']:.4f} | "
                     + " | ".join(str(r["scores"][t]) for t in tasks) + " |")
    lines += ["", "| task | chance level | how | status | threshold (bracket) |", "|---|---|---|---|---|"]
    for t in tasks:
        th, ch = results["thresholds"][t], results["chance"][t]
        where = f"{th['threshold']:.4f} ({th['bracket'][0]:.4f}-{th['bracket'][1]:.4f})" if th["bracket"] else "—"
        lines.append(f"| {t} | {ch['chance']:.2f} | {ch['how']} | {th['status']} | {where} |")
    lines += [""] + [f"![{t}]({p})" for t, p in plots.items()]
    return "\n".join(lines) + "\n"
