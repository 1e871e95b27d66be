"""``alignkit eval``: run a suite on a model with the LongBench protocol and report signed scores.

Flow, top to bottom: resolve tasks -> load records (mini suite built in memory, or the user's
LongBench JSONL) -> for each task render + middle-truncate prompts -> greedy generation through the
shared engine (cached per prompt in ``<out>/predictions/`` so an interrupted run resumes) -> score
-> attach a comparability signature to every number -> ``results.json``, ``report.md``, plot.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from alignkit.config import ConfigError, Precision, StrictModel
from alignkit.evals.longbench import (
    GENERATION_SEED,
    LONGBENCH_E_BUCKETS,
    TRUNCATION_SIDE,
    dataset_score,
    default_max_length,
    find_task_file,
    leaderboard,
    load_jsonl,
    longbench_e_bucket,
    mean_or_none,
    middle_truncate,
    score_prediction,
)
from alignkit.evals.metrics import get_metric
from alignkit.evals.registry import TaskSpec, load_suite, select_tasks
from alignkit.evals.signature import Signature, aggregate_signature
from alignkit.fingerprints import (
    chat_template_hash,
    dataset_hash,
    model_dir_fingerprint,
    module_fingerprint,
    sha256_hex,
    tokenizer_fingerprint,
)
from alignkit.models import DEFAULT_MODEL

PROTOCOL = {"name": "longbench-v1", "version": 1}
RESULTS_FORMAT = "alignkit-eval-results/1"


class EvalConfig(StrictModel):
    """Configuration of one ``alignkit eval`` run (CLI flags map one-to-one onto these fields)."""

    model: str = Field(default=DEFAULT_MODEL, description="Embedded model name, local HF dir or hub id.")
    suite: Literal["mini", "longbench"] = Field(
        default="mini", description="'mini' (offline) or 'longbench'."
    )
    longbench_dir: str | None = Field(default=None, description="Folder with LongBench <task>.jsonl files.")
    longbench_e: bool = Field(
        default=False, description="Use the LongBench-E '<task>_e.jsonl' files and subset."
    )
    tasks: list[str] = Field(default_factory=list, description="Task names; empty = the whole suite.")
    limit: int | None = Field(default=None, ge=1, description="Keep the first N records of each task.")
    lengths: list[str] | None = Field(
        default=None, description="Mini suite nominal lengths (1k,2k,4k,8k or N)."
    )
    samples_per_length: int | None = Field(default=None, ge=1, description="Mini suite samples per length.")
    suite_seed: int = Field(default=0, description="Seed of the mini suite builder.")
    max_length: int | None = Field(
        default=None,
        ge=16,
        description="Max prompt tokens before middle truncation; default from the context window.",
    )
    batch_size: int = Field(default=4, ge=1, description="Prompts per generation batch.")
    dtype: Precision = Field(default="auto", description="Weights precision; auto: bf16 where the hardware multiplies bf16 natively, else fp32 (float32/bfloat16: old spellings).")
    device: str = Field(default="cpu", description="torch device for the HF backend.")
    backend: Literal["auto", "hf", "vllm"] = Field(default="auto", description="Generation backend.")
    output_dir: str | None = Field(
        default=None, description="Where results go; default runs/eval/<model>-<suite>."
    )
    plot: bool = Field(default=True, description="Write the score-by-length PNG.")
    resume: bool = Field(default=True, description="Reuse cached predictions of identical prompts/settings.")

    cli_aliases = {"-o": "output_dir"}

    @model_validator(mode="before")
    @classmethod
    def _suite_from_dir(cls, data: Any) -> Any:
        # a LongBench folder without a suite means the LongBench suite (the mini suite has no folder)
        if isinstance(data, dict) and data.get("longbench_dir") and "suite" not in data:
            return {**data, "suite": "longbench"}
        return data

    @field_validator("lengths", mode="before")
    @classmethod
    def _lengths_as_text(cls, v: Any) -> Any:
        # YAML reads "lengths: [500, 1k]" as [500, "1k"]; both are valid nominal lengths
        return (
            [str(x) if isinstance(x, int) and not isinstance(x, bool) else x for x in v]
            if isinstance(v, list)
            else v
        )

    @model_validator(mode="after")
    def _consistent(self) -> EvalConfig:
        if self.suite == "longbench" and not self.longbench_dir:
            raise ValueError("suite 'longbench' needs longbench_dir (the folder with <task>.jsonl files)")
        if self.suite == "mini" and (self.longbench_dir or self.longbench_e):
            raise ValueError("longbench_dir/longbench_e apply to suite 'longbench', not 'mini'")
        if self.suite == "longbench" and (self.lengths is not None or self.samples_per_length is not None):
            raise ValueError("lengths/samples_per_length apply to the mini suite only")
        return self

    def resolved_output_dir(self) -> Path:
        if self.output_dir:
            return Path(self.output_dir)
        slug = "".join(
            ch if ch.isalnum() or ch in "-_." else "_" for ch in Path(self.model).name or self.model
        )
        suite = f"{self.suite}-e" if self.longbench_e else self.suite
        return Path("runs") / "eval" / f"{slug}-{suite}"


# ----------------------------------------------------------------------------------- data
def load_records(cfg: EvalConfig, tasks: list[TaskSpec]) -> dict[str, list[dict]]:
    if cfg.suite == "mini":
        from alignkit.evals.mini_suite import DEFAULT_LENGTHS, build_suite

        data = build_suite(
            [t.name for t in tasks],
            list(cfg.lengths or DEFAULT_LENGTHS),
            cfg.samples_per_length or 1,
            cfg.suite_seed,
        )
    else:
        data = {}
        for t in tasks:
            path = find_task_file(cfg.longbench_dir, t.name, cfg.longbench_e)
            data[t.name] = load_jsonl(path)
    if cfg.limit:
        data = {k: v[: cfg.limit] for k, v in data.items()}
    return data


# ----------------------------------------------------------------------------------- identity
def subject_components(model_name: str, engine: Any, dtype: str) -> dict[str, Any]:
    """Model, tokenizer and chat-template identity (what is being evaluated)."""
    from alignkit.models import resolve_model_path

    try:
        resolved = Path(resolve_model_path(model_name))
    except Exception:  # noqa: BLE001 - an injected in-memory model has no path
        resolved = None
    if resolved is not None and resolved.is_dir():
        model_sha = model_dir_fingerprint(resolved)
    elif hasattr(engine, "model"):
        model_sha = module_fingerprint(engine.model)
    else:
        raise ConfigError(
            f"cannot fingerprint model {model_name!r}: not a local directory and no in-memory model"
        )
    tok = engine.tokenizer
    return {
        "model": {"name": model_name, "sha256": model_sha, "dtype": dtype},
        "tokenizer": {"sha256": tokenizer_fingerprint(tok)},
        "chat_template": {"sha256": chat_template_hash(tok)},
    }


def task_signature(
    task: TaskSpec, records: list[dict], max_length: int, params: Any, subject: dict[str, Any]
) -> Signature:
    """Every component that changes this task's number (setting) plus what was evaluated (subject)."""
    comps: dict[str, Any] = {
        "metric": get_metric(task.metric).identity(),
        "task": {
            "name": task.name,
            "suite": task.suite,
            "template_sha256": sha256_hex(task.prompt),
            "first_line": task.first_line,
            "scoring": "max over answers; dataset = round(100*mean, 2)",
        },
        "chat_policy": {"apply_chat_template": task.chat_template},
        "truncation": {
            "max_input_tokens": max_length,
            "side": TRUNCATION_SIDE,
            "counted": "tokenizer(prompt)",
        },
        "decoding": {
            "strategy": "greedy",
            "max_new_tokens": params.max_new_tokens,
            "min_new_tokens": params.min_new_tokens,
            "stop_at_newline_token": task.stop_at_newline_token,
            "stop_strings": list(params.stop),
        },
        "dataset": {"sha256": dataset_hash(records), "n": len(records)},
        "protocol": dict(PROTOCOL),
        "model": subject["model"],
        "tokenizer": subject["tokenizer"],
        # the template only matters when it is applied
        "chat_template": subject["chat_template"] if task.chat_template else {"sha256": None},
    }
    return Signature(comps)


def subset_signature(sig: Signature, records: list[dict], bucket: str) -> Signature:
    comps = dict(sig.components)
    comps["dataset"] = {"sha256": dataset_hash(records), "n": len(records), "bucket": bucket}
    return Signature(comps)


# ----------------------------------------------------------------------------------- generation
class PredictionCache:
    """Append-only JSONL of finished generations keyed by everything that determines them."""

    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled
        self.entries: dict[str, dict] = {}
        if enabled and path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                    self.entries[entry["key"]] = entry
                except (ValueError, KeyError):
                    continue  # a torn last line from a crash: regenerate that sample

    def add(self, entries: list[dict]) -> None:
        for e in entries:
            self.entries[e["key"]] = e
        if self.enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries))


def generate_all(
    engine, prompts: list[str], params, chat: bool, cache: PredictionCache, key_base: dict, bar
) -> list[dict]:
    """Generate (or reuse) one greedy completion per prompt, longest prompts first, in chunks."""
    keys = [sha256_hex({**key_base, "prompt": p, "chat": chat, "params": asdict(params)}) for p in prompts]
    todo = [i for i, k in enumerate(keys) if k not in cache.entries]
    bar.advance(len(prompts) - len(todo))
    todo.sort(key=lambda i: -len(prompts[i]))
    step = max(1, engine.batch_size)
    for start in range(0, len(todo), step):
        chunk = todo[start : start + step]
        results = engine.generate(
            [prompts[i] for i in chunk], params, apply_chat_template=chat, progress=False
        )
        entries = []
        for i, res in zip(chunk, results, strict=True):
            c = res.completions[0]
            entries.append(
                {
                    "key": keys[i],
                    "text": c.text,
                    "finish_reason": c.finish_reason,
                    "prompt_tokens": res.prompt_tokens,
                }
            )
        cache.add(entries)
        bar.advance(len(chunk))
    return [cache.entries[k] for k in keys]


# ----------------------------------------------------------------------------------- run
def _weights_dtype(cfg: EvalConfig) -> str:
    """The torch dtype the evaluated weights run in (``float32``/``bfloat16``): ``precision: auto`` resolved
    like everywhere else; results and cache keys record it, never ``auto``."""
    from alignkit.precision import announce, resolve_precision

    choice = resolve_precision(cfg.dtype, cfg.device)
    if cfg.dtype == "auto":
        announce(choice, f"{cfg.model} weights")
    return choice.dtype


def run_eval(cfg: EvalConfig, engine: Any = None, progress: bool = True) -> dict[str, Any]:
    """Run the configured evaluation and return the results dict (see ``results.json``)."""
    from alignkit.generate.engine import SamplingParams, make_engine

    tasks = select_tasks(cfg.suite, cfg.tasks or None, cfg.longbench_e)
    data = load_records(cfg, tasks)
    dtype = _weights_dtype(cfg)
    if engine is None:
        engine = make_engine(cfg.model, cfg.backend, dtype=dtype, device=cfg.device, batch_size=cfg.batch_size)
    tokenizer = engine.tokenizer
    context_window = int(engine.max_context)
    max_length = cfg.max_length or default_max_length(context_window)
    longest_gen = max(t.max_new_tokens for t in tasks)
    if max_length >= context_window:
        raise ConfigError(
            f"max_length {max_length} must be below the model's context window {context_window}"
        )
    subject = subject_components(cfg.model, engine, dtype)
    key_base = {
        "model": subject["model"]["sha256"],
        "dtype": dtype,
        "tokenizer": subject["tokenizer"]["sha256"],
        "chat_template": subject["chat_template"]["sha256"],
    }
    out_dir = cfg.resolved_output_dir()
    newline_id = tokenizer.encode("\n", add_special_tokens=False)[-1]

    samples: list[dict] = []
    task_results: dict[str, dict] = {}
    started = time.time()
    total = sum(len(v) for v in data.values())
    from alignkit.progress import ProgressBar

    with ProgressBar("eval", total, progress) as bar:
        for task in tasks:
            records = data[task.name]
            bar.describe(task.name)
            params = SamplingParams(
                max_new_tokens=task.max_new_tokens,
                temperature=0.0,
                min_new_tokens=task.min_new_tokens,
                stop_token_ids=[newline_id] if task.stop_at_newline_token else [],
                seed=GENERATION_SEED,
            )
            prepared = [middle_truncate(task.render(r), tokenizer, max_length) for r in records]
            cache = PredictionCache(out_dir / "predictions" / f"{task.name}.jsonl", cfg.resume)
            gens = generate_all(
                engine, [p for p, _, _ in prepared], params, task.chat_template, cache, key_base, bar
            )
            sig = task_signature(task, records, max_length, params, subject)
            scores = []
            for idx, (rec, (_, n_before, truncated), gen) in enumerate(
                zip(records, prepared, gens, strict=True)
            ):
                score = score_prediction(task, gen["text"], rec["answers"], rec.get("all_classes"))
                scores.append(score)
                samples.append(
                    {
                        "task": task.name,
                        "index": idx,
                        "_id": rec.get("_id"),
                        "length": rec["length"],
                        "bucket": longbench_e_bucket(rec["length"]),
                        "length_bucket": rec.get("length_bucket"),
                        "input_tokens": n_before,
                        "truncated": truncated,
                        "prompt_tokens": gen["prompt_tokens"],
                        "pred": gen["text"],
                        "finish_reason": gen["finish_reason"],
                        "answers": rec["answers"],
                        "all_classes": rec.get("all_classes"),
                        "score": score,
                    }
                )
            task_results[task.name] = _task_summary(task, records, scores, sig)
    results = {
        "format": RESULTS_FORMAT,
        "alignkit_version": _version(),
        "suite": cfg.suite + ("-e" if cfg.longbench_e else ""),
        "config": cfg.model_dump(mode="json"),
        "subject": subject,
        "max_input_tokens": max_length,
        "context_window": context_window,
        "longest_generation": longest_gen,
        "elapsed_seconds": round(time.time() - started, 1),
        "tasks": task_results,
        "aggregates": _aggregates(task_results, {t.name: t for t in tasks}, subject),
        "samples": samples,
    }
    return results


def _task_summary(task: TaskSpec, records: list[dict], scores: list[float], sig: Signature) -> dict:
    summary: dict[str, Any] = {
        "score": dataset_score(scores),
        "n": len(scores),
        "metric": task.metric,
        "category": task.category,
        "language": task.language,
        "signature": sig.to_dict(),
        "buckets": {},
    }
    for bucket in LONGBENCH_E_BUCKETS:
        idx = [i for i, r in enumerate(records) if longbench_e_bucket(r["length"]) == bucket]
        if idx:
            sub = [records[i] for i in idx]
            summary["buckets"][bucket] = {
                "score": dataset_score([scores[i] for i in idx]),
                "n": len(idx),
                "signature": subset_signature(sig, sub, bucket).to_dict(),
            }
    labels = list(dict.fromkeys(r.get("length_bucket") for r in records if r.get("length_bucket")))
    if labels:
        summary["length_buckets"] = {}
        for label in labels:
            idx = [i for i, r in enumerate(records) if r.get("length_bucket") == label]
            sub = [records[i] for i in idx]
            summary["length_buckets"][label] = {
                "score": dataset_score([scores[i] for i in idx]),
                "n": len(idx),
                "signature": subset_signature(sig, sub, label).to_dict(),
            }
    return summary


def _aggregates(task_results: dict[str, dict], tasks: dict[str, TaskSpec], subject: dict) -> dict[str, Any]:
    subj = Signature({k: subject[k] for k in ("model", "tokenizer")})
    sigs = {n: Signature.from_dict(r["signature"]) for n, r in task_results.items()}
    scores = {n: r["score"] for n, r in task_results.items()}
    out: dict[str, Any] = {}
    scored = {n: s for n, s in sigs.items() if scores[n] is not None}
    if scored:
        out["task_mean"] = {
            "score": _r2(mean_or_none(scores[n] for n in scored)),
            "members": list(scored),
            "signature": aggregate_signature("task_mean", scored, subj).to_dict(),
        }
    board = leaderboard(scores, tasks)
    for lang, entry in board.items():
        for cat, c in entry["categories"].items():
            c["score"] = _r2(c["score"])
            c["signature"] = aggregate_signature(
                f"{lang}:{cat}", {m: sigs[m] for m in c["members"]}, subj
            ).to_dict()
        if entry["avg"] is not None:
            members = {m: sigs[m] for c in entry["categories"].values() for m in c["members"]}
            entry["avg"] = {
                "score": _r2(entry["avg"]),
                "signature": aggregate_signature(f"{lang}:avg-of-6-categories", members, subj).to_dict(),
            }
    out["leaderboard"] = board
    # length curve: per bucket, mean over categories of the category means (LongBench README)
    for key, field in (("curve", "buckets"), ("length_curve", "length_buckets")):
        labels: list[str] = []
        for r in task_results.values():
            labels += [b for b in r.get(field, {}) if b not in labels]
        if not labels:
            continue
        curve = {}
        for label in labels:
            members = {n: r for n, r in task_results.items() if label in r.get(field, {})}
            by_cat: dict[str, list[float]] = {}
            for n, r in members.items():
                by_cat.setdefault(tasks[n].category, []).append(r[field][label]["score"])
            member_sigs = {n: Signature.from_dict(r[field][label]["signature"]) for n, r in members.items()}
            curve[label] = {
                "score": _r2(mean_or_none(mean_or_none(v) for v in by_cat.values())),
                "members": list(members),
                "signature": aggregate_signature(f"{key}:{label}", member_sigs, subj).to_dict(),
            }
        out[key] = curve
    return out


def _r2(x: float | None) -> float | None:
    return None if x is None else round(x, 2)


def _version() -> str:
    from alignkit import __version__

    return __version__


def suite_task_names(suite: str) -> list[str]:
    return list(load_suite(suite))
