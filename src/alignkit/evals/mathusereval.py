"""``alignkit eval mathusereval``: a MathUserEval-style judge evaluation on your own questions.

Input: a JSONL file in MathUserEval format, one question per line::

    {"question_id": "q1", "category": "Algebra", "question": "...", "reference": "...",
     ["answer": "42"], ["response": "..."]}

``reference`` is the annotator-written reference answer the judge compares against (anchored at 8);
``answer`` (optional) is a checkable final answer for exact-answer accuracy; ``response`` (optional)
is the evaluated answer — rows without one are answered by ``model`` greedily (temperature 0, as
the official protocol does for every category).

The judge is the Math-Critique prompt (:mod:`alignkit.judge.critique`) under the official MathUserEval
rubric by default (``critique.rubric``), through any judge spec, with the judge layer's cache, retries
and failure records. Reported (METHODS §4.5):

* per category: n, scored, parse failures, mean overall score, mean of each dimension, share >= 7;
* overall: the **micro** mean over all scored questions (``show_result.py``'s ``math-user-eval``
  column), the **macro** mean over categories (the README's "Overall") and the share of scored
  questions with a score >= 7 (the column ``show_result.py`` labels ``...-hard-split``);
* parse failures are counted separately and never enter the means; the official behaviour (a
  failure is a score of -1 inside every mean) is reported only with ``official_minus_one: true``,
  under its own label;
* exact-answer accuracy over the questions that carry ``answer`` (``alignkit.data.mathgen``'s checker).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from alignkit.config import Precision, StrictModel, dump_config
from alignkit.judge.client import JudgeConfig
from alignkit.judge.critique import DIMENSIONS, CritiqueConfig, CritiqueItem, Rubric
from alignkit.models import DEFAULT_MODEL

HIGH = 7  # the share of answers scoring >= 7 (METHODS §4.5)


class MathUserEvalCritique(CritiqueConfig):
    """The Math-Critique judge's prompting and parsing; the official MathUserEval rubric by default."""

    rubric: Rubric = "official"
    """official (default here): the MathUserEval judge's rubric, so scores compare with published
    MathUserEval numbers; partial_credit: alignkit's rubric of the pipelines (docs/self_critique.md)."""


class MathUserEvalConfig(StrictModel):
    """``alignkit eval mathusereval --config FILE`` (or ``--data FILE --judge SPEC``)."""

    cli_aliases: ClassVar[dict[str, str]] = {"--judge": "judge.spec"}

    data: str
    """MathUserEval-format JSONL: question, reference, category, optional question_id, answer, response."""
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    """The Math-Critique judge (spec local:<model> or openai:<base_url>#<model>); calls cached in output_dir."""
    critique: MathUserEvalCritique = Field(default_factory=MathUserEvalCritique)
    """Prompting and parsing of the judge (rubric: official by default)."""
    model: str = DEFAULT_MODEL
    """Answers the rows that carry no 'response' (embedded name, HF dir or hub id)."""
    max_new_tokens: int = Field(default=512, ge=1)
    """Answer budget of the evaluated model."""
    batch_size: int = Field(default=8, ge=1)
    """Prompts per generation batch of the evaluated model."""
    dtype: Precision = "auto"
    """Weights precision of the evaluated model; auto: bf16 where the hardware multiplies bf16 natively, else fp32
    (float32/bfloat16: old spellings of fp32/bf16)."""
    device: str | None = None
    """cpu | cuda (null: the engine's default)."""
    backend: Literal["auto", "hf", "vllm"] = "auto"
    """Generation backend of the evaluated model."""
    limit: int | None = Field(default=None, ge=1)
    """Evaluate the first N questions only."""
    official_minus_one: bool = False
    """Also report the official show_result.py means, where a parse failure counts as -1 (labelled)."""
    output_dir: str = "runs/eval/mathusereval"
    """answers.jsonl, scored.jsonl, results.json and the judge cache go here."""


def read_questions(path: str, limit: int | None = None) -> list[dict[str, Any]]:
    """Validated rows with ``id`` filled in; errors name file:line:field (nothing is written)."""
    from alignkit.errors import DataError
    from alignkit.generate.jsonl import read_jsonl, require_str

    rows, seen = [], {}
    for n, (line, row) in enumerate(read_jsonl(path)):
        where = f"{path}:{line}"
        for key in ("question", "reference", "category"):
            require_str(row, key, where)
        if "response" in row:
            require_str(row, "response", where, allow_empty=True)
        if "answer" in row and (isinstance(row["answer"], bool) or not isinstance(row["answer"], str | int | float)):
            raise DataError(f"{where}: field 'answer': expected a string or a number")
        qid = str(row.get("question_id", row.get("id", n)))
        if qid in seen:
            raise DataError(f"{where}: field 'question_id': duplicate id {qid!r} (first on line {seen[qid]})")
        seen[qid] = line
        rows.append({**row, "id": qid})
    return rows[:limit] if limit else rows


def _mean(xs: list[float]) -> float | None:
    return round(sum(xs) / len(xs), 3) if xs else None


def summarise(rows: list[dict[str, Any]], official_minus_one: bool = False) -> dict[str, Any]:
    """Per-category and overall numbers from scored rows (``category``, ``status``, ``score``, ``dimensions``)."""
    cats: dict[str, list[dict]] = {}
    for r in rows:
        cats.setdefault(r["category"], []).append(r)
    per_cat = {}
    for name, members in cats.items():
        ok = [r for r in members if r["status"] == "scored"]
        scores = [r["score"] for r in ok]
        per_cat[name] = {
            "n": len(members),
            "scored": len(ok),
            "parse_failures": len(members) - len(ok),
            "overall": _mean(scores),
            "dimensions": {d: _mean([r["dimensions"][d] for r in ok if d in r["dimensions"]]) for d in DIMENSIONS},
            "share_ge_7": _mean([float(s >= HIGH) for s in scores]),
        }
    ok = [r for r in rows if r["status"] == "scored"]
    cat_means = [c["overall"] for c in per_cat.values() if c["overall"] is not None]
    out: dict[str, Any] = {
        "n": len(rows),
        "scored": len(ok),
        "parse_failures": len(rows) - len(ok),
        "micro_mean": _mean([r["score"] for r in ok]),
        "macro_mean": _mean(cat_means),
        "macro_over": len(cat_means),
        "share_ge_7": _mean([float(r["score"] >= HIGH) for r in ok]),
        "categories": per_cat,
    }
    if official_minus_one:
        as_official = [r["score"] if r["status"] == "scored" else -1.0 for r in rows]
        by_cat = [
            _mean([r["score"] if r["status"] == "scored" else -1.0 for r in members]) for members in cats.values()
        ]
        out["official_minus_one"] = {
            "note": "show_result.py: a parse failure counts as a score of -1 inside the means",
            "micro_mean": _mean(as_official),
            "macro_mean": _mean([m for m in by_cat if m is not None]),
            "share_ge_7": _mean([float(s >= HIGH) for s in as_official]),
        }
    return out


def exact_accuracy(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Exact-answer accuracy over the rows with a checkable ``answer``."""
    from alignkit.data.mathgen import check_answer

    checkable = [r for r in rows if r.get("answer") is not None]
    correct = sum(bool(check_answer(r["response"], str(r["answer"]))) for r in checkable)
    return {"n": len(checkable), "correct": correct,
            "accuracy": round(correct / len(checkable), 4) if checkable else None}


def answer_questions(cfg: MathUserEvalConfig, rows: list[dict[str, Any]], progress: bool = True) -> list[dict]:
    """Fill ``response`` with the model's greedy answer where the row has none."""
    todo = [i for i, r in enumerate(rows) if "response" not in r]
    if not todo:
        return rows
    from alignkit.generate.engine import SamplingParams, make_engine

    kw: dict[str, Any] = {"dtype": cfg.dtype, "batch_size": cfg.batch_size}
    if cfg.device:
        kw["device"] = cfg.device
    engine = make_engine(cfg.model, backend=cfg.backend, **kw)
    res = engine.generate([[{"role": "user", "content": rows[i]["question"]}] for i in todo],
                          SamplingParams(max_new_tokens=cfg.max_new_tokens), progress=progress)
    out = [dict(r) for r in rows]
    for i, g in zip(todo, res, strict=True):
        out[i].update(response=g.completions[0].text, finish_reason=g.completions[0].finish_reason,
                      answered_by=cfg.model)
    return out


def run_mathusereval(cfg: MathUserEvalConfig, progress: bool = True) -> dict[str, Any]:
    """Answer (where needed), judge, summarise; writes answers/scored JSONL and results.json."""
    from alignkit.evals.report import atomic_write
    from alignkit.generate.jsonl import write_jsonl_atomic
    from alignkit.judge.client import judge_from_config
    from alignkit.judge.critique import MathCritic

    rows = read_questions(cfg.data, cfg.limit)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, out / "config.yaml")
    rows = answer_questions(cfg, rows, progress)
    write_jsonl_atomic(out / "answers.jsonl", rows)
    judge = judge_from_config(cfg.judge, cache_path=out / "judge_cache.sqlite")
    critic = MathCritic(judge, cfg.critique)
    try:
        crit = critic.critique([CritiqueItem(r["id"], r["question"], r["reference"], r["response"]) for r in rows],
                               progress=progress)
        usage = judge.usage.as_dict()
    finally:
        critic.close()
    scored = [{**r, **{k: v for k, v in c.items() if k != "id"}} for r, c in zip(rows, crit, strict=True)]
    write_jsonl_atomic(out / "scored.jsonl", scored)
    results = {
        "data": cfg.data,
        "judge": critic.judge.model_id,
        "protocol": f"MathUserEval-style Math-Critique, rubric {cfg.critique.rubric} (reference anchored at 8; "
                    "last {...} block; integer 1-10)",
        **summarise(scored, cfg.official_minus_one),
        "exact_answer": exact_accuracy(scored),
        "judge_usage": usage,
    }
    atomic_write(out / "results.json", json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    return results
