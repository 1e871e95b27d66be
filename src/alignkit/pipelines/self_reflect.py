"""``alignkit pipeline self-reflect``: SciGLM's self-reflective annotation (METHODS §10a).

Stages (fingerprinted and resumable by :mod:`alignkit.pipelines.stages`), each writing a JSONL:

1. **questions** — questions with standard answers (:mod:`alignkit.data.mathgen`);
2. **cot** — the annotator writes a step-by-step solution (``prompts/reflect_cot``: the question,
   then ``A:``);
3. **check** — the checker compares the solution with the standard answer and answers only ``1``
   (consistent) or ``0`` (inconsistent, no explicit answer, ambiguous); anything else is retried up to
   ``check.attempts`` times and then recorded as a failure: such a row is dropped and counted, never
   taken as a 0 or a 1;
4. **revise** — every solution judged 0 is revised by the annotator, shown the question, the wrong
   solution and the correct final answer (``prompts/reflect_revise``); the text after
   ``Correct solution:`` is kept (up to ``revise.attempts`` tries, then a recorded failure);
5. **recheck** — the checker judges the revised solutions the same way;
6. **filter** (optional) — a classifier (a causal LM fine-tuned to answer ``True``/``False`` after
   ``question + "【答案】" + solution``) scores ``p(True) - p(False)`` from the softmax at the last
   position (the input tokenised as ``alignkit sft`` tokenised its training prompts, its head kept when it
   is over ``classifier.max_length``, as SciGLM does); rows with score ``<= 0`` are dropped;
7. **rows** — SFT rows ``{"prompt", "completion", "id", "source": "cot" | "revised", ...}``: the
   provenance says which stage produced each row; ``report.md`` counts what each stage kept and the
   measured correctness of the kept rows (mathgen's exact-answer check, independent of the checker).

The checker is ``checker.kind: judge`` (any judge spec, SciGLM's GPT-4 role; ``force_format: expected``
lets a weak local model answer by its next-token probabilities of ``1`` and ``0``) or ``verifier``
(mathgen's exact-answer check). Annotator calls go through the judge layer too (cache, retries).
"""

from __future__ import annotations

import json
import math
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from alignkit.config import StrictModel
from alignkit.judge.client import FormatForcing, Judge, JudgeConfig, Parsed, ParseError
from alignkit.judge.prompts import fill, load_prompt
from alignkit.pipelines.self_critique import QuestionsSection, make_questions
from alignkit.pipelines.stages import PipelineError, Stages, file_hash, fingerprint, read_rows

CLASSIFIER_SEPARATOR = "【答案】"  # SciGLM's classifier input: question + "【答案】" + answer


class AnnotatorSection(StrictModel):
    """Who writes and revises solutions (SciGLM: GPT-4)."""

    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    """Any judge spec: local:<model> or openai:<base_url>#<model> (cached, retried)."""
    cot_max_tokens: int = Field(default=256, ge=1)
    """Budget of a step-by-step solution."""
    revise_max_tokens: int = Field(default=320, ge=1)
    """Budget of a reflection + corrected solution."""
    temperature: float = Field(default=0.0, ge=0.0)
    """Temperature of the first try (retries of an unparseable revision run at 0.7)."""


class CheckerSection(StrictModel):
    """Who judges correctness against the standard answer."""

    kind: Literal["judge", "verifier"] = "judge"
    """judge: the reflect_judge prompt through any judge; verifier: mathgen's exact-answer check."""
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    attempts: int = Field(default=10, ge=1)
    """SciGLM retries up to 10 times until the answer is 0 or 1; then the row is a recorded failure."""
    force_format: Literal["off", "expected"] = "off"
    """expected: the verdict is the likelier of the tokens '1' and '0' after the prompt (weak judges)."""


class ReviseSection(StrictModel):
    """Self-reflective revision of the solutions judged wrong."""

    attempts: int = Field(default=3, ge=1)
    """Tries until the revision has a 'Correct solution:' part (SciGLM: 3)."""


class ClassifierSection(StrictModel):
    """Optional quality filter (SciGLM's fine-tuned classifier)."""

    model: str | None = None
    """A causal LM fine-tuned to answer True/False (null: no filter). Train one with `alignkit sft` on rows
    {prompt: question【答案】solution, completion: "True" | "False"}."""
    true_token: str = "True"
    """The label token of a good sample (must be one token)."""
    false_token: str = "False"
    """The label token of a bad sample (must be one token)."""
    max_length: int = Field(default=1024, ge=16)
    """Most tokens of a classifier input, its special tokens included (SciGLM: 1024)."""
    overflow: Literal["keep_head", "keep_tail"] = "keep_head"
    """An input over max_length: keep_head = its first max_length tokens (SciGLM's rm_eval.py, whose
    tokenizer truncates on the right); keep_tail = its last ones (the question's start and the BOS are
    lost, the solution's end is seen; what `on_long_prompt: truncate_left` does in training)."""


class SelfReflectConfig(StrictModel):
    """``alignkit pipeline self-reflect --config FILE``."""

    output_dir: str = "runs/self_reflect"
    """Every stage's JSONL, stages.json, sft_rows.jsonl, results.json and report.md go here."""
    questions: QuestionsSection = Field(default_factory=QuestionsSection)
    annotator: AnnotatorSection = Field(default_factory=AnnotatorSection)
    checker: CheckerSection = Field(default_factory=CheckerSection)
    revise: ReviseSection = Field(default_factory=ReviseSection)
    classifier: ClassifierSection = Field(default_factory=ClassifierSection)


# ----------------------------------------------------------------------------------------- parsing
def parse_verdict(text: str) -> bool:
    """SciGLM's checker answer: exactly '1' (True) or '0' (False), else :class:`ParseError`."""
    m = re.fullmatch(r"\s*([01])\s*\.?\s*", text or "")
    if not m:
        raise ParseError(f"verdict is not 0 or 1: {(text or '')[:40]!r}")
    return m.group(1) == "1"


def expected_verdict(dist: dict[str, float]) -> bool:
    """Weak-judge mode: the likelier of '1' and '0' among the top next tokens."""
    p = {v: sum(math.exp(lp) for t, lp in dist.items() if t.strip() == v) for v in ("1", "0")}
    if not any(p.values()):
        raise ParseError("neither '1' nor '0' among the checker's most likely next tokens")
    return p["1"] > p["0"]


def parse_revision(text: str) -> str:
    """The text after 'Correct solution:' (SciGLM: after '正确解答：'); :class:`ParseError` if absent or empty."""
    parts = re.split(r"Correct solution\s*:|正确解答[:：]", text or "")
    if len(parts) < 2 or not parts[-1].strip():
        raise ParseError("no 'Correct solution:' part in the revision")
    return parts[-1].strip()


# ----------------------------------------------------------------------------------------- stages
class _Annotators:
    """The annotator and checker judges (one object when both name the same spec)."""

    def __init__(self, cfg: SelfReflectConfig, out: Path):
        from alignkit.judge.client import judge_from_config

        self.cfg = cfg
        self.annotator = judge_from_config(cfg.annotator.judge, out / "annotator.sqlite")
        same = cfg.checker.judge.model_dump() == cfg.annotator.judge.model_dump()
        self.checker = (self.annotator if same or cfg.checker.kind == "verifier"
                        else judge_from_config(cfg.checker.judge, out / "checker.sqlite"))

    def close(self) -> None:
        self.annotator.close()
        if self.checker is not self.annotator:
            self.checker.close()


def _map(judge: Judge, fn, rows: list[dict]) -> list[dict]:
    with ThreadPoolExecutor(judge.concurrency) as pool:
        return list(pool.map(fn, rows))


def cot(j: _Annotators, rows: list[dict]) -> list[dict]:
    a = j.cfg.annotator

    def one(r: dict) -> dict:
        prompt = fill(load_prompt("reflect_cot", "en"), question=r["question"])
        out = j.annotator.complete_parsed([{"role": "user", "content": prompt}], _nonempty, a.cot_max_tokens,
                                          attempts=2, first_temperature=a.temperature, retry_temperature=0.7)
        return {**r, "solution": out.value, "cot_status": "ok" if out.ok else "failed", "cot_failure": out.error}

    return _map(j.annotator, one, rows)


def _nonempty(text: str) -> str:
    if not (text or "").strip():
        raise ParseError("empty solution")
    return text.strip()


def check(j: _Annotators, rows: list[dict], field: str) -> list[dict]:
    """Adds ``<field>_verdict``: "correct" | "incorrect" | "failed" (+ the failure) for rows with a solution."""
    from alignkit.data.mathgen import check_answer

    c = j.cfg.checker

    def one(r: dict) -> dict:
        if r.get("solution") is None:
            return r
        if c.kind == "verifier":
            out = Parsed(True, check_answer(r["solution"], r["answer"]), "mathgen.check_answer", 1)
        else:
            prompt = fill(load_prompt("reflect_judge", "en"), question=r["question"], solution=r["solution"],
                          answer=r["answer"])
            expected = c.force_format == "expected"
            out = j.checker.complete_parsed(
                [{"role": "user", "content": prompt}], parse_verdict, 4, attempts=c.attempts,
                first_temperature=0.0, retry_temperature=0.7, stop=["\n"],
                force=FormatForcing("Verdict: ", "") if expected else None,
                force_mode="expected" if expected else "off", expect=expected_verdict if expected else None)
        verdict = ("correct" if out.value else "incorrect") if out.ok else "failed"
        return {**r, f"{field}_verdict": verdict, f"{field}_failure": out.error}

    return _map(j.checker, one, rows)


def revise(j: _Annotators, rows: list[dict]) -> list[dict]:
    a, attempts = j.cfg.annotator, j.cfg.revise.attempts

    def one(r: dict) -> dict:
        prompt = fill(load_prompt("reflect_revise", "en"), question=r["question"], solution=r["solution"],
                      answer=r["answer"])
        out = j.annotator.complete_parsed([{"role": "user", "content": prompt}], parse_revision,
                                          a.revise_max_tokens, attempts=attempts,
                                          first_temperature=a.temperature, retry_temperature=0.7)
        return {**r, "wrong_solution": r["solution"], "solution": out.value,
                "revise_status": "ok" if out.ok else "failed", "revise_failure": out.error}

    return _map(j.annotator, one, rows)


def classifier_scores(cfg: ClassifierSection, rows: list[dict]) -> list[float]:
    """SciGLM's filter score p(True) - p(False) at the last position of question + 【答案】 + solution.

    The input is tokenised as ``alignkit sft`` tokenised the classifier's training prompts (one
    :class:`~alignkit.data.tokenize.ChatTokenizer`: a plain prompt gets the tokenizer's special tokens,
    such as a BOS), and the label ids are the first tokens training put after them.
    """
    import torch

    from alignkit.data.tokenize import ChatTokenizer
    from alignkit.models import load_causal_lm, load_tokenizer

    chat, model = ChatTokenizer(load_tokenizer(cfg.model)), load_causal_lm(cfg.model)
    true_id, false_id = (_label_id(chat, cfg, name) for name in ("true_token", "false_token"))
    scores = []
    with torch.no_grad():
        for r in rows:
            ids = chat.prompt_ids(r["question"] + CLASSIFIER_SEPARATOR + r["solution"], conversational=False)
            ids = ids[: cfg.max_length] if cfg.overflow == "keep_head" else ids[-cfg.max_length:]
            probs = model(torch.tensor([ids])).logits[0, -1].float().softmax(-1)
            scores.append(float(probs[true_id] - probs[false_id]))
    return scores


def _label_id(chat, cfg: ClassifierSection, name: str) -> int:
    """The token training teaches for a label: its completion ids are that one token and the EOS."""
    label = getattr(cfg, name)
    ids = chat.completion_ids("", label, conversational=False)
    if len(ids) != 2:
        raise PipelineError(f"classifier.{name}={label!r} is {len(ids) - 1} tokens; it must be one")
    return ids[0]


# ----------------------------------------------------------------------------------------- the run
def run_self_reflect(cfg: SelfReflectConfig, progress: bool = True) -> dict[str, Any]:
    """Run every stage; returns the results written to ``<output_dir>/results.json``."""
    from alignkit.generate.jsonl import write_jsonl_atomic

    stages, started = Stages.open(cfg), time.time()
    out = stages.out
    questions, _ = make_questions(cfg.questions)
    write_jsonl_atomic(out / "questions.jsonl", questions)
    fp = fingerprint(file_hash(out / "questions.jsonl"))
    j = None

    def stage(name: str, settings: Any, make) -> list[dict]:
        nonlocal fp, j
        path = out / f"{name}.jsonl"
        fp = fingerprint(fp, settings)
        if stages.fresh(name, fp, [path]):
            t = time.time()
            j = j or _Annotators(cfg, out)
            write_jsonl_atomic(path, make())
            stages.finish(name, fp, t)
        fp = fingerprint(fp, file_hash(path))
        return read_rows(path)

    try:
        drafted = stage("cot", cfg.annotator.model_dump(), lambda: cot(j, questions))
        checked = stage("check", cfg.checker.model_dump(), lambda: check(j, drafted, "check"))
        wrong = [r for r in checked if r.get("check_verdict") == "incorrect"]
        revised = stage("revise", cfg.revise.model_dump(), lambda: revise(j, wrong))
        rechecked = stage("recheck", cfg.checker.model_dump(),
                          lambda: check(j, [r for r in revised if r["revise_status"] == "ok"], "recheck"))
    finally:
        if j is not None:
            j.close()
    kept = ([{**r, "source": "cot"} for r in checked if r.get("check_verdict") == "correct"]
            + [{**r, "source": "revised"} for r in rechecked if r.get("recheck_verdict") == "correct"])
    if cfg.classifier.model and kept:
        for r, s in zip(kept, classifier_scores(cfg.classifier, kept), strict=True):
            r["classifier_score"] = s
    final = [r for r in kept if r.get("classifier_score", 1.0) > 0]
    rows = [{"prompt": [{"role": "user", "content": r["question"]}],
             "completion": [{"role": "assistant", "content": r["solution"]}],
             "id": r["prompt_id"], "answer": r["answer"], "source": r["source"],
             **({"classifier_score": r["classifier_score"]} if "classifier_score" in r else {})} for r in final]
    write_jsonl_atomic(out / "sft_rows.jsonl", rows)
    results = {"counts": stage_counts(questions, drafted, checked, revised, rechecked, kept, final),
               "stage_seconds": stages.timings, "reused_stages": stages.reused,
               "total_seconds": round(time.time() - started, 1)}
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "report.md").write_text(render_report(cfg, results), encoding="utf-8")
    return results


def _correct(rows: list[dict]) -> dict[str, Any]:
    from alignkit.data.mathgen import check_answer

    n = len(rows)
    c = sum(check_answer(r["solution"], r["answer"]) for r in rows)
    return {"rows": n, "measured_correct": c, "measured_accuracy": round(c / n, 4) if n else None}


def stage_counts(questions, drafted, checked, revised, rechecked, kept, final) -> dict[str, Any]:
    """What each stage kept, with its measured correctness (mathgen's exact-answer check)."""
    verdicts = {v: sum(r.get("check_verdict") == v for r in checked) for v in ("correct", "incorrect", "failed")}
    re_verdicts = {v: sum(r.get("recheck_verdict") == v for r in rechecked) for v in ("correct", "incorrect", "failed")}
    return {
        "questions": len(questions),
        "cot": {**_correct([r for r in drafted if r["cot_status"] == "ok"]),
                "failed": sum(r["cot_status"] == "failed" for r in drafted)},
        "check": verdicts,
        "kept_after_check": _correct([r for r in kept if r["source"] == "cot"]),
        "revise": {**_correct([r for r in revised if r["revise_status"] == "ok"]),
                   "failed": sum(r["revise_status"] == "failed" for r in revised)},
        "recheck": re_verdicts,
        "kept_after_recheck": _correct([r for r in kept if r["source"] == "revised"]),
        "classifier_dropped": len(kept) - len(final),
        "final": {**_correct(final), "by_source": {s: sum(r["source"] == s for r in final) for s in ("cot", "revised")}},
    }


def render_report(cfg: SelfReflectConfig, results: dict[str, Any]) -> str:
    c = results["counts"]
    who = cfg.checker.judge.spec if cfg.checker.kind == "judge" else "verifier (mathgen exact-answer check)"

    def acc(d: dict) -> str:
        return f"{d['measured_correct']}/{d['rows']}" if d["rows"] else "0/0"

    lines = [
        "# Self-reflective annotation (SciGLM)", "",
        f"Annotator `{cfg.annotator.judge.spec}`; checker {who}; {c['questions']} questions. "
        "Measured correctness is mathgen's exact-answer check, independent of the checker.", "",
        "| stage | rows | measured correct | notes |", "|---|---|---|---|",
        f"| cot | {c['cot']['rows']} | {acc(c['cot'])} | {c['cot']['failed']} annotator failures |",
        f"| check | {sum(c['check'].values())} | | 1: {c['check']['correct']}, 0: {c['check']['incorrect']}, "
        f"failed (dropped, never scored): {c['check']['failed']} |",
        f"| kept after check | {c['kept_after_check']['rows']} | {acc(c['kept_after_check'])} | source = cot |",
        f"| revise | {c['revise']['rows']} | {acc(c['revise'])} | {c['revise']['failed']} revision failures |",
        f"| recheck | {sum(c['recheck'].values())} | | 1: {c['recheck']['correct']}, 0: {c['recheck']['incorrect']}, "
        f"failed: {c['recheck']['failed']} |",
        f"| kept after recheck | {c['kept_after_recheck']['rows']} | {acc(c['kept_after_recheck'])} | source = revised |",
        f"| classifier filter | {c['final']['rows']} | {acc(c['final'])} | dropped {c['classifier_dropped']} |",
        "", f"SFT rows: `sft_rows.jsonl` ({c['final']['rows']}: {c['final']['by_source']}).", "",
    ]
    return "\n".join(lines)
