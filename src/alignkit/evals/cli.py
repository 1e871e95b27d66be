"""``alignkit eval``: LongBench-protocol evaluation, run comparison, and the CoTK / WED / SEQA metrics.

Kept import-light: everything heavy is imported inside the handlers.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# Flags of the main run that map one-to-one onto EvalConfig fields (None = not given).
_RUN_FIELDS = (
    "model",
    "suite",
    "longbench_dir",
    "longbench_e",
    "tasks",
    "limit",
    "lengths",
    "samples_per_length",
    "suite_seed",
    "max_length",
    "batch_size",
    "dtype",
    "device",
    "backend",
    "output_dir",
    "plot",
    "resume",
)


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval",
        help="evaluate a model (LongBench protocol, offline mini suite) and compare runs",
        description="Run the offline mini suite or LongBench on a model; every score carries a comparability signature.",
    )
    p.add_argument("--config", help="YAML file with EvalConfig fields; flags override it")
    p.add_argument(
        "--model", help="embedded model name, local HF dir or hub id (default smollm2-135m-instruct)"
    )
    p.add_argument(
        "--suite", choices=["mini", "longbench"], help="default: mini, or longbench with --longbench-dir"
    )
    p.add_argument("--longbench-dir", help="folder with LongBench <task>.jsonl (or data/<task>.jsonl) files")
    p.add_argument(
        "--longbench-e", action="store_true", default=None, help="use the LongBench-E <task>_e.jsonl subset"
    )
    p.add_argument("--tasks", type=_csv, help="comma-separated task names (default: all of the suite)")
    p.add_argument("--limit", type=int, help="first N records per task")
    p.add_argument("--lengths", type=_csv, help="mini suite nominal lengths, e.g. 1k,2k,4k,8k or 500")
    p.add_argument(
        "--samples-per-length", type=int, help="mini suite samples per task and length (default 1)"
    )
    p.add_argument("--suite-seed", type=int, help="mini suite builder seed (default 0)")
    p.add_argument(
        "--max-length",
        type=int,
        help="prompt tokens kept by middle truncation (default: window//1000*1000-500)",
    )
    p.add_argument("--batch-size", type=int, help="prompts per generation batch (default 4)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--device", help="torch device (default cpu)")
    p.add_argument("--backend", choices=["auto", "hf", "vllm"])
    p.add_argument("--output-dir", "-o", help="default runs/eval/<model>-<suite>")
    p.add_argument("--no-plot", dest="plot", action="store_false", default=None, help="skip the PNG")
    p.add_argument(
        "--no-resume", dest="resume", action="store_false", default=None, help="ignore cached predictions"
    )
    p.set_defaults(func=_cmd_run)
    sub = p.add_subparsers(dest="eval_command", metavar="SUBCOMMAND")

    c = sub.add_parser(
        "compare", help="show two results.json side by side; mark numbers that are not comparable"
    )
    c.add_argument("a", help="first results.json (or its run directory)")
    c.add_argument("b", help="second results.json (or its run directory)")
    c.add_argument(
        "--strict", action="store_true", help="refuse (exit 2) if any shared number is not comparable"
    )
    c.add_argument("--all", action="store_true", help="also show bucket rows (default: tasks and averages)")
    c.set_defaults(func=_cmd_compare)

    m = sub.add_parser("build-mini", help="write the offline mini suite as LongBench-format JSONL files")
    m.add_argument("--out", required=True, help="output folder")
    m.add_argument("--tasks", type=_csv)
    m.add_argument("--lengths", type=_csv, default=None)
    m.add_argument("--samples-per-length", type=int, default=1)
    m.add_argument("--suite-seed", type=int, default=0)
    m.set_defaults(func=_cmd_build_mini)

    t = sub.add_parser(
        "textgen", help="CoTK-style BLEU, self-BLEU, fw/bw-BLEU, distinct-n, perplexity on a JSONL"
    )
    t.add_argument(
        "--data", required=True, help='JSONL rows {"hypothesis", "references" | "reference", ["context"]}'
    )
    t.add_argument(
        "--metrics",
        type=_csv,
        default=["bleu", "self-bleu", "fw-bw-bleu", "distinct"],
        help="any of bleu,self-bleu,fw-bw-bleu,distinct,perplexity",
    )
    t.add_argument("--tokenizer", default="space", choices=["space", "regex"])
    t.add_argument(
        "--ngram", type=int, default=None, help="BLEU order (default 4) / distinct order (default 3)"
    )
    t.add_argument("--model", help="causal LM for perplexity (default smollm2-135m-instruct)")
    t.add_argument("--output", help="write the results JSON here")
    t.set_defaults(func=_cmd_textgen)

    w = sub.add_parser(
        "wed", help="word-embedding edit-distance similarity of sentence pairs (JSONL {a, b[, label]})"
    )
    w.add_argument("--data", required=True)
    w.add_argument(
        "--embeddings",
        default="minilm",
        help="'minilm' (default), 'policy:<model>' or a JSON {word: vector} file",
    )
    w.add_argument("--w", type=float, default=2.0)
    w.add_argument("--b", type=float, default=0.0)
    w.add_argument("--lam", type=float, default=0.5)
    w.add_argument("--mu", type=float, default=0.5)
    w.add_argument("--normalize", choices=["length", "tight"], default="length")
    w.add_argument("--threshold", type=float, help="with labels: accuracy of similarity >= threshold")
    w.add_argument("--output", help="write per-pair similarities (JSONL) here")
    w.set_defaults(func=_cmd_wed)

    s = sub.add_parser(
        "seqa",
        help="zero-shot multiple choice by voting with sampled answers (JSONL {prompt, options, label})",
    )
    s.add_argument("--data", required=True)
    s.add_argument("--model", help="generator (default smollm2-135m-instruct)")
    s.add_argument("--encoder", help="sentence-transformers encoder (default all-minilm-l6-v2)")
    s.add_argument("--voters", type=int, default=500)
    s.add_argument("--batch", type=int, default=100)
    s.add_argument("--max-rounds", type=int, default=500)
    s.add_argument("--max-new-tokens", type=int, default=15)
    s.add_argument("--kernel-temperature", type=float, default=0.1)
    s.add_argument(
        "--eos-counts-as-end",
        action="store_true",
        help="accept voters ending at EOS without a period (SocialIQA)",
    )
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--output", help="write per-item scores and voters (JSON) here")
    s.set_defaults(func=_cmd_seqa)

    from alignkit.evals.config_commands import register as register_config_commands

    register_config_commands(sub)  # mathusereval, trajectory


# ------------------------------------------------------------------------------------ run
def _eval_config(args: argparse.Namespace):
    from alignkit.config import load_config
    from alignkit.evals.runner import EvalConfig

    given = {f: getattr(args, f) for f in _RUN_FIELDS if getattr(args, f, None) is not None}
    if "longbench_dir" in given and "suite" not in given:
        given["suite"] = "longbench"
    overrides = [f"{k}={json.dumps(v)}" for k, v in given.items()]
    return load_config(EvalConfig, args.config, overrides)


def _cmd_run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from alignkit.cli import UserError
    from alignkit.config import dump_config
    from alignkit.evals.longbench import DataError
    from alignkit.evals.report import print_summary, write_reports
    from alignkit.evals.runner import run_eval
    from alignkit.generate.engine import GenerationError

    cfg = _eval_config(args)
    console = Console(stderr=True)
    console.print(f"[dim]alignkit eval: {cfg.model_dump_json()}")
    try:
        results = run_eval(cfg, progress=True)
    except (FileNotFoundError, DataError, GenerationError) as exc:
        raise UserError(str(exc)) from None
    out = cfg.resolved_output_dir()
    paths = write_reports(results, out, plot=cfg.plot)
    dump_config(cfg, out / "config.yaml")
    print_summary(results, Console())
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


# ------------------------------------------------------------------------------------ compare
def _results_path(p: str) -> Path:
    path = Path(p)
    return path / "results.json" if path.is_dir() else path


def _cmd_compare(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from alignkit.cli import UserError
    from alignkit.evals.report import compare, load_results

    try:
        a, b = load_results(_results_path(args.a)), load_results(_results_path(args.b))
    except (FileNotFoundError, ValueError) as exc:
        raise UserError(str(exc)) from None
    rows = compare(a, b)
    if not args.all:
        rows = [r for r in rows if "@" not in r["name"] or r["name"].startswith("all tasks")]
    bad = [r for r in rows if not r["comparable"] and r["a"] is not None and r["b"] is not None]
    if args.strict and bad:
        lines = [f"{r['name']}: " + "; ".join(r["reasons"]) for r in bad]
        raise UserError("numbers are not comparable (signatures differ):\n  " + "\n  ".join(lines))
    console = Console()
    for tag, path, res in (("A", args.a, a), ("B", args.b, b)):
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
def _cmd_build_mini(args: argparse.Namespace) -> int:
    from alignkit.cli import UserError
    from alignkit.evals.mini_suite import DEFAULT_LENGTHS, build_suite, write_suite

    try:
        suite = build_suite(
            args.tasks, args.lengths or list(DEFAULT_LENGTHS), args.samples_per_length, args.suite_seed
        )
    except (KeyError, ValueError) as exc:
        raise UserError(str(exc).strip("'\"")) from None
    for p in write_suite(suite, args.out):
        print(p)
    return 0


# ------------------------------------------------------------------------------------ jsonl input
def _read_jsonl(path: str, required: dict[str, type | tuple]) -> list[dict]:
    from alignkit.cli import UserError

    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: file not found")
    rows = []
    for lineno, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{p}:{lineno}: invalid JSON: {exc.msg}") from None
        if not isinstance(row, dict):
            raise UserError(f"{p}:{lineno}: expected a JSON object")
        for field, typ in required.items():
            if field not in row:
                raise UserError(f"{p}:{lineno}: missing field {field!r}")
            if not isinstance(row[field], typ):
                raise UserError(f"{p}:{lineno}: field {field!r} has type {type(row[field]).__name__}")
        rows.append(row)
    if not rows:
        raise UserError(f"{p}: no rows")
    return rows


def _emit(result: dict, output: str | None) -> None:
    text = json.dumps(result, indent=1, ensure_ascii=False)
    if output:
        from alignkit.evals.report import atomic_write

        atomic_write(Path(output), text + "\n")
    print(
        text if len(text) < 4000 else json.dumps({k: v for k, v in result.items() if k != "items"}, indent=1)
    )


# ------------------------------------------------------------------------------------ textgen
def _cmd_textgen(args: argparse.Namespace) -> int:
    from alignkit.cli import UserError
    from alignkit.evals import cotk

    rows = _read_jsonl(args.data, {"hypothesis": str})
    refs = []
    for i, r in enumerate(rows, 1):
        ref = r.get("references", r.get("reference"))
        if isinstance(ref, str):
            ref = [ref]
        if not isinstance(ref, list) or not ref or not all(isinstance(x, str) for x in ref):
            raise UserError(
                f"{args.data}:{i}: field 'references' must be a non-empty list of strings (or 'reference')"
            )
        refs.append(ref)
    hyps = [r["hypothesis"] for r in rows]
    known = {"bleu", "self-bleu", "fw-bw-bleu", "distinct", "perplexity"}
    unknown = [m for m in args.metrics if m not in known]
    if unknown:
        raise UserError(f"unknown metric(s) {unknown}; choose from {sorted(known)}")
    out: dict = {"data": args.data, "n": len(rows), "tokenizer": args.tokenizer}
    try:
        if "bleu" in args.metrics:
            out.update(cotk.corpus_bleu(hyps, refs, ngram=args.ngram or 4, tokenizer=args.tokenizer))
        if "self-bleu" in args.metrics:
            out.update(cotk.self_bleu(hyps, ngram=args.ngram or 4, tokenizer=args.tokenizer))
        if "fw-bw-bleu" in args.metrics:
            flat = [x for rs in refs for x in rs]
            out.update(cotk.fw_bw_bleu(hyps, flat, ngram=args.ngram or 4, tokenizer=args.tokenizer))
        if "distinct" in args.metrics:
            out.update(cotk.distinct(hyps, ngram=args.ngram or 3, tokenizer=args.tokenizer))
        if "perplexity" in args.metrics:
            from alignkit.models import DEFAULT_MODEL, load_causal_lm, load_tokenizer

            name = args.model or DEFAULT_MODEL
            contexts = [r.get("context", "") for r in rows] if any("context" in r for r in rows) else None
            out.update(
                cotk.perplexity(load_causal_lm(name), load_tokenizer(name), [rs[0] for rs in refs], contexts)
            )
            out["perplexity model"] = name
    except ValueError as exc:
        raise UserError(str(exc)) from None
    _emit(out, args.output)
    return 0


# ------------------------------------------------------------------------------------ wed
def _cmd_wed(args: argparse.Namespace) -> int:
    from alignkit.cli import UserError
    from alignkit.evals.wed import DictEmbeddings, InputEmbeddings, wed_similarity

    rows = _read_jsonl(args.data, {"a": str, "b": str})
    if args.embeddings == "minilm":
        emb = InputEmbeddings.minilm()
    elif args.embeddings.startswith("policy:"):
        emb = InputEmbeddings.from_causal_lm(args.embeddings.split(":", 1)[1])
    else:
        path = Path(args.embeddings)
        if not path.is_file():
            raise UserError(
                f"--embeddings: {path} is not 'minilm', 'policy:<model>' or an existing JSON file"
            )
        emb = DictEmbeddings(json.loads(path.read_text(encoding="utf-8")), name=f"dict:{path.name}")
    try:
        sims = [
            wed_similarity(
                r["a"], r["b"], emb, w=args.w, bias=args.b, lam=args.lam, mu=args.mu, normalize=args.normalize
            )
            for r in rows
        ]
    except ValueError as exc:
        raise UserError(str(exc)) from None
    out = {
        "data": args.data,
        "n": len(rows),
        "embeddings": emb.name,
        "params": {"w": args.w, "b": args.b, "lam": args.lam, "mu": args.mu, "normalize": args.normalize},
        "mean_similarity": sum(sims) / len(sims),
    }
    labelled = [(s, r["label"]) for s, r in zip(sims, rows, strict=True) if "label" in r]
    if labelled and args.threshold is not None:
        out["threshold"] = args.threshold
        out["accuracy"] = sum((s >= args.threshold) == bool(lab) for s, lab in labelled) / len(labelled)
    if args.output:
        from alignkit.evals.report import atomic_write

        atomic_write(
            Path(args.output),
            "".join(
                json.dumps({**r, "similarity": s}, ensure_ascii=False) + "\n"
                for r, s in zip(rows, sims, strict=True)
            ),
        )
    print(json.dumps(out, indent=1))
    return 0


# ------------------------------------------------------------------------------------ seqa
def _cmd_seqa(args: argparse.Namespace) -> int:
    from alignkit.cli import UserError
    from alignkit.evals.cotk import metric_hash
    from alignkit.evals.seqa import SEQA, EngineVoterGenerator, is_correct, sentence_encoder
    from alignkit.generate.engine import make_engine
    from alignkit.models import DEFAULT_ENCODER, DEFAULT_MODEL

    rows = _read_jsonl(args.data, {"prompt": str, "options": list, "label": int})
    for i, r in enumerate(rows, 1):
        if len(r["options"]) < 2 or not all(isinstance(o, str) for o in r["options"]):
            raise UserError(f"{args.data}:{i}: field 'options' must list at least two strings")
        if not 0 <= r["label"] < len(r["options"]):
            raise UserError(f"{args.data}:{i}: field 'label' {r['label']} is not an index into options")
    model = args.model or DEFAULT_MODEL
    gen = EngineVoterGenerator(
        make_engine(model, "auto", batch_size=args.batch), max_new_tokens=args.max_new_tokens
    )
    seqa = SEQA(
        generator=gen,
        encoder=sentence_encoder(args.encoder),
        n_voters=args.voters,
        batch=args.batch,
        max_rounds=args.max_rounds,
        eos_counts_as_end=args.eos_counts_as_end,
        temperature=args.kernel_temperature,
        seed=args.seed,
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
        "encoder": args.encoder or DEFAULT_ENCODER,
        "n_voters": args.voters,
        "batch": args.batch,
        "max_rounds": args.max_rounds,
        "kernel_temperature": args.kernel_temperature,
        "eos_counts_as_end": args.eos_counts_as_end,
        "seed": args.seed,
    }
    out = {
        "data": args.data,
        "n": len(rows),
        "accuracy": correct / len(rows),
        "accuracy hashvalue": metric_hash(
            "SEQA", 1, settings, [{k: r[k] for k in ("prompt", "options", "label")} for r in rows]
        ),
        "short_of_voters": sum(1 for it in items if it["n_voters"] < args.voters),
        "settings": settings,
        "items": items,
    }
    _emit(out, args.output)
    return 0
