"""``alignkit eval``: LongBench-protocol evaluation, run comparison, and the CoTK / WED / SEQA metrics.

Kept import-light: everything heavy is imported inside the handlers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from alignkit.commands import Command
from alignkit.config import StrictModel
from alignkit.data.records import Record, read_objects, require_type
from alignkit.errors import DataError, UserError


class CompareConfig(StrictModel):
    """``alignkit eval compare A B``."""

    a: str
    """First results.json (or its run directory)."""
    b: str
    """Second results.json (or its run directory)."""
    strict: bool = False
    """Refuse (exit 2) if any shared number is not comparable."""
    all: bool = False
    """Also show bucket rows (default: tasks and averages)."""

    cli_positional = ("a", "b")


class BuildMiniConfig(StrictModel):
    """``alignkit eval build-mini``: the offline mini suite as LongBench-format JSONL files."""

    output_dir: str
    """Output folder."""
    renamed = {"out": "output_dir"}
    tasks: list[str] | None = None
    """Task names (comma-separated on the command line); default: all mini tasks."""
    lengths: list[str] | None = None
    """Nominal lengths, e.g. 1k,2k,4k,8k or 500; default: the suite's."""
    samples_per_length: int = 1
    """Samples per task and length."""
    suite_seed: int = 0
    """Seed of the suite builder."""


class TextgenConfig(StrictModel):
    """``alignkit eval textgen``: CoTK-style corpus metrics on a JSONL."""

    data: str
    """JSONL rows {"hypothesis", "references" | "reference", ["context"]}."""
    metrics: list[str] = ["bleu", "self-bleu", "fw-bw-bleu", "distinct"]
    """Any of bleu, self-bleu, fw-bw-bleu, distinct, perplexity."""
    tokenizer: Literal["space", "regex"] = "space"
    """How text is split into tokens."""
    ngram: int | None = None
    """BLEU order (default 4) / distinct order (default 3)."""
    model: str | None = None
    """Causal LM for perplexity (default smollm2-135m-instruct)."""
    output_file: str | None = None
    """Write the results JSON here."""
    renamed = {"output": "output_file"}


class WedConfig(StrictModel):
    """``alignkit eval wed``: word-embedding edit-distance similarity of sentence pairs."""

    data: str
    """JSONL rows {a, b[, label]}."""
    embeddings: str = "minilm"
    """'minilm', 'policy:<model>' or a JSON {word: vector} file."""
    w: float = 2.0
    """Weight of the similarity term in the substitution cost."""
    b: float = 0.0
    """Bias of the substitution cost."""
    lam: float = 0.5
    """Insertion/deletion cost weight (lambda)."""
    mu: float = 0.5
    """Insertion/deletion context weight (mu)."""
    normalize: Literal["length", "tight"] = "length"
    """Normalisation of the edit distance."""
    threshold: float | None = None
    """With labels: accuracy of similarity >= threshold."""
    output_file: str | None = None
    """Write per-pair similarities (JSONL) here."""
    renamed = {"output": "output_file"}


class SeqaConfig(StrictModel):
    """``alignkit eval seqa``: zero-shot multiple choice by voting with sampled answers."""

    data: str
    """JSONL rows {prompt, options, label}."""
    model: str | None = None
    """Generator (default smollm2-135m-instruct)."""
    encoder: str | None = None
    """sentence-transformers encoder (default all-minilm-l6-v2)."""
    voters: int = 500
    """Voters (sampled answers) per item."""
    batch: int = 100
    """Samples drawn per round."""
    max_rounds: int = 500
    """Most sampling rounds per item."""
    max_new_tokens: int = 15
    """Tokens per sampled answer."""
    kernel_temperature: float = 0.1
    """Temperature of the voting kernel."""
    eos_counts_as_end: bool = False
    """Accept voters ending at EOS without a period (SocialIQA)."""
    seed: int = 0
    """Sampling seed."""
    output_file: str | None = None
    """Write per-item scores and voters (JSON) here."""
    renamed = {"output": "output_file"}


# ------------------------------------------------------------------------------------ run
def run(cfg) -> int:
    from rich.console import Console

    from alignkit.evals.report import print_summary, write_reports
    from alignkit.evals.runner import run_eval

    results = run_eval(cfg, progress=True)
    out = cfg.resolved_output_dir()
    paths = write_reports(results, out, plot=cfg.plot)
    print_summary(results, Console())
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


# ------------------------------------------------------------------------------------ compare
def _results_path(p: str) -> Path:
    path = Path(p)
    return path / "results.json" if path.is_dir() else path


def compare(cfg: CompareConfig) -> int:
    from rich.console import Console
    from rich.table import Table

    from alignkit.evals.report import compare, load_results

    try:
        a, b = load_results(_results_path(cfg.a)), load_results(_results_path(cfg.b))
    except (FileNotFoundError, ValueError) as exc:
        raise UserError(str(exc)) from None
    rows = compare(a, b)
    if not cfg.all:
        rows = [r for r in rows if "@" not in r["name"] or r["name"].startswith("all tasks")]
    bad = [r for r in rows if not r["comparable"] and r["a"] is not None and r["b"] is not None]
    if cfg.strict and bad:
        lines = [f"{r['name']}: " + "; ".join(r["reasons"]) for r in bad]
        raise UserError("numbers are not comparable (signatures differ):\n  " + "\n  ".join(lines))
    console = Console()
    for tag, path, res in (("A", cfg.a, a), ("B", cfg.b, b)):
        m = res["subject"]["model"]
        console.print(f"{tag}: {path}  (model {m['name']} #{m['sha256'][:8]}, {m['dtype']})")
    table = Table()
    for col in ("number", "A", "B", "B - A", "comparable?"):
        table.add_column(col, overflow="fold")
    for r in rows:
        fa = "—" if r["a"] is None else f"{r['a']:.2f}"
        fb = "—" if r["b"] is None else f"{r['b']:.2f}"
        delta = "" if r["delta"] is None else f"{r['delta']:+.2f}"
        status = "[green]yes" if r["comparable"] else "[red]NO: " + "; ".join(r["reasons"])
        table.add_row(r["name"], fa, fb, delta, status)
    console.print(table)
    same_subject = a["subject"] == b["subject"]
    print(
        f"{len(rows) - len(bad)} comparable, {len(bad)} not comparable"
        + (" (same model and tokenizer)" if same_subject else "")
    )
    return 0


# ------------------------------------------------------------------------------------ build-mini
def build_mini(cfg: BuildMiniConfig) -> int:
    from alignkit.evals.mini_suite import DEFAULT_LENGTHS, build_suite, write_suite

    try:
        suite = build_suite(
            cfg.tasks, cfg.lengths or list(DEFAULT_LENGTHS), cfg.samples_per_length, cfg.suite_seed
        )
    except (KeyError, ValueError) as exc:
        raise UserError(str(exc).strip("'\"")) from None
    for p in write_suite(suite, cfg.output_dir):
        print(p)
    return 0


# ------------------------------------------------------------------------------------ row input
_WHAT = {str: "a string", list: "a list", int: "an integer"}


def _read_rows(path: str, required: dict[str, type]) -> list[Record]:
    """The rows of ``path`` (JSONL, JSON or Parquet, read by :mod:`alignkit.data.records`), each holding
    the ``required`` fields with the given types; a bad row raises ``DataError`` naming file:line:field."""
    records = read_objects(path)
    for rec in records:
        for field, typ in required.items():
            require_type(rec.value, field, rec.where, typ, _WHAT[typ])
    return records


def _emit(result: dict, output: str | None) -> None:
    text = json.dumps(result, indent=1, ensure_ascii=False)
    if output:
        from alignkit.evals.report import atomic_write

        atomic_write(Path(output), text + "\n")
    print(
        text if len(text) < 4000 else json.dumps({k: v for k, v in result.items() if k != "items"}, indent=1)
    )


# ------------------------------------------------------------------------------------ textgen
def textgen(cfg: TextgenConfig) -> int:
    from alignkit.evals import cotk

    records = _read_rows(cfg.data, {"hypothesis": str})
    rows = [rec.value for rec in records]
    refs = []
    for rec in records:
        ref = rec.value.get("references", rec.value.get("reference"))
        if isinstance(ref, str):
            ref = [ref]
        if not isinstance(ref, list) or not ref or not all(isinstance(x, str) for x in ref):
            raise DataError(
                f"{rec.where}: field 'references': must be a non-empty list of strings (or 'reference')"
            )
        refs.append(ref)
    hyps = [r["hypothesis"] for r in rows]
    known = {"bleu", "self-bleu", "fw-bw-bleu", "distinct", "perplexity"}
    unknown = [m for m in cfg.metrics if m not in known]
    if unknown:
        raise UserError(f"unknown metric(s) {unknown}; choose from {sorted(known)}")
    out: dict = {"data": cfg.data, "n": len(rows), "tokenizer": cfg.tokenizer}
    try:
        if "bleu" in cfg.metrics:
            out.update(cotk.corpus_bleu(hyps, refs, ngram=cfg.ngram or 4, tokenizer=cfg.tokenizer))
        if "self-bleu" in cfg.metrics:
            out.update(cotk.self_bleu(hyps, ngram=cfg.ngram or 4, tokenizer=cfg.tokenizer))
        if "fw-bw-bleu" in cfg.metrics:
            flat = [x for rs in refs for x in rs]
            out.update(cotk.fw_bw_bleu(hyps, flat, ngram=cfg.ngram or 4, tokenizer=cfg.tokenizer))
        if "distinct" in cfg.metrics:
            out.update(cotk.distinct(hyps, ngram=cfg.ngram or 3, tokenizer=cfg.tokenizer))
        if "perplexity" in cfg.metrics:
            from alignkit.models import DEFAULT_MODEL, load_causal_lm, load_tokenizer

            name = cfg.model or DEFAULT_MODEL
            contexts = [r.get("context", "") for r in rows] if any("context" in r for r in rows) else None
            out.update(
                cotk.perplexity(load_causal_lm(name), load_tokenizer(name), [rs[0] for rs in refs], contexts)
            )
            out["perplexity model"] = name
    except ValueError as exc:
        raise UserError(str(exc)) from None
    _emit(out, cfg.output_file)
    return 0


# ------------------------------------------------------------------------------------ wed
def wed(cfg: WedConfig) -> int:
    from alignkit.evals.wed import DictEmbeddings, InputEmbeddings, wed_similarity

    rows = [rec.value for rec in _read_rows(cfg.data, {"a": str, "b": str})]
    if cfg.embeddings == "minilm":
        emb = InputEmbeddings.minilm()
    elif cfg.embeddings.startswith("policy:"):
        emb = InputEmbeddings.from_causal_lm(cfg.embeddings.split(":", 1)[1])
    else:
        path = Path(cfg.embeddings)
        if not path.is_file():
            raise UserError(
                f"--embeddings: {path} is not 'minilm', 'policy:<model>' or an existing JSON file"
            )
        emb = DictEmbeddings(json.loads(path.read_text(encoding="utf-8")), name=f"dict:{path.name}")
    try:
        sims = [
            wed_similarity(
                r["a"], r["b"], emb, w=cfg.w, bias=cfg.b, lam=cfg.lam, mu=cfg.mu, normalize=cfg.normalize
            )
            for r in rows
        ]
    except ValueError as exc:
        raise UserError(str(exc)) from None
    out = {
        "data": cfg.data,
        "n": len(rows),
        "embeddings": emb.name,
        "params": {"w": cfg.w, "b": cfg.b, "lam": cfg.lam, "mu": cfg.mu, "normalize": cfg.normalize},
        "mean_similarity": sum(sims) / len(sims),
    }
    labelled = [(s, r["label"]) for s, r in zip(sims, rows, strict=True) if "label" in r]
    if labelled and cfg.threshold is not None:
        out["threshold"] = cfg.threshold
        out["accuracy"] = sum((s >= cfg.threshold) == bool(lab) for s, lab in labelled) / len(labelled)
    if cfg.output_file:
        from alignkit.evals.report import atomic_write

        atomic_write(
            Path(cfg.output_file),
            "".join(
                json.dumps({**r, "similarity": s}, ensure_ascii=False) + "\n"
                for r, s in zip(rows, sims, strict=True)
            ),
        )
    print(json.dumps(out, indent=1))
    return 0


# ------------------------------------------------------------------------------------ seqa
def seqa(cfg: SeqaConfig) -> int:
    from alignkit.evals.cotk import metric_hash
    from alignkit.evals.seqa import SEQA, EngineVoterGenerator, is_correct, sentence_encoder
    from alignkit.generate.engine import make_engine
    from alignkit.models import DEFAULT_ENCODER, DEFAULT_MODEL

    records = _read_rows(cfg.data, {"prompt": str, "options": list, "label": int})
    rows = [rec.value for rec in records]
    for rec in records:
        r = rec.value
        if len(r["options"]) < 2 or not all(isinstance(o, str) for o in r["options"]):
            raise DataError(f"{rec.where}: field 'options': must list at least two strings")
        if not 0 <= r["label"] < len(r["options"]):
            raise DataError(f"{rec.where}: field 'label': {r['label']} is not an index into options")
    model = cfg.model or DEFAULT_MODEL
    gen = EngineVoterGenerator(
        make_engine(model, "auto", batch_size=cfg.batch), max_new_tokens=cfg.max_new_tokens
    )
    seqa = SEQA(
        generator=gen,
        encoder=sentence_encoder(cfg.encoder),
        n_voters=cfg.voters,
        batch=cfg.batch,
        max_rounds=cfg.max_rounds,
        eos_counts_as_end=cfg.eos_counts_as_end,
        temperature=cfg.kernel_temperature,
        seed=cfg.seed,
    )
    items, correct = [], 0
    for r in rows:
        res = seqa.score(r["prompt"], r["options"])
        ok = is_correct(res.scores, r["label"])
        correct += ok
        items.append(
            {
                "prompt": r["prompt"],
                "scores": res.scores,
                "prediction": res.prediction,
                "label": r["label"],
                "correct": ok,
                "n_voters": len(res.voters),
                "samples_drawn": res.samples_drawn,
                "voters": res.voters,
            }
        )
    settings = {
        "generator": {**gen.identity(), "model": model},
        "encoder": cfg.encoder or DEFAULT_ENCODER,
        "n_voters": cfg.voters,
        "batch": cfg.batch,
        "max_rounds": cfg.max_rounds,
        "kernel_temperature": cfg.kernel_temperature,
        "eos_counts_as_end": cfg.eos_counts_as_end,
        "seed": cfg.seed,
    }
    out = {
        "data": cfg.data,
        "n": len(rows),
        "accuracy": correct / len(rows),
        "accuracy hashvalue": metric_hash(
            "SEQA", 1, settings, [{k: r[k] for k in ("prompt", "options", "label")} for r in rows]
        ),
        "short_of_voters": sum(1 for it in items if it["n_voters"] < cfg.voters),
        "settings": settings,
        "items": items,
    }
    _emit(out, cfg.output_file)
    return 0


COMMANDS = [
    Command("eval", "evaluate a model (LongBench protocol, offline mini suite) and compare runs",
            "alignkit.evals.runner:EvalConfig", "alignkit.evals.cli:run", save_to="resolved_output_dir",
            description="Run the offline mini suite or LongBench on a model; every score carries a comparability "
            "signature. The sub-commands below are also spelled 'alignkit eval --task NAME ...'.",
            dispatch="--task",
            dispatch_note="The LongBench / mini-suite tasks of a plain 'alignkit eval' run are chosen with "
            "--tasks NAME,... (plural)."),
    Command("eval compare", "show two results.json side by side; mark numbers that are not comparable",
            "alignkit.evals.cli:CompareConfig", "alignkit.evals.cli:compare", echo=False),
    Command("eval build-mini", "write the offline mini suite as LongBench-format JSONL files",
            "alignkit.evals.cli:BuildMiniConfig", "alignkit.evals.cli:build_mini", save_to="output_dir"),
    Command("eval textgen", "CoTK-style BLEU, self-BLEU, fw/bw-BLEU, distinct-n, perplexity on a JSONL",
            "alignkit.evals.cli:TextgenConfig", "alignkit.evals.cli:textgen", save_to="output_file"),
    Command("eval wed", "word-embedding edit-distance similarity of sentence pairs (JSONL {a, b[, label]})",
            "alignkit.evals.cli:WedConfig", "alignkit.evals.cli:wed", save_to="output_file"),
    Command("eval seqa", "zero-shot multiple choice by voting with sampled answers (JSONL {prompt, options, label})",
            "alignkit.evals.cli:SeqaConfig", "alignkit.evals.cli:seqa", save_to="output_file"),
]
