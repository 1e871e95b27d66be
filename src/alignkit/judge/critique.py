"""Math-Critique (ChatGLM-Math, METHODS §4.2/§4.5): question + reference answer + model answer -> critique
and an integer score from 1 to 10.

Two rubrics (``critique.rubric``), each a prompt file per language; under both the judge compares the
answer with the reference (which is anchored at 8), writes a critique, and ends with a Python-dict-like
block of four dimension scores and an overall score, as the official MathUserEval judge does:

* ``official`` (``prompts/math_critique_official.<lang>.txt``): the official MathUserEval judge's prompt
  (ChatGLM-Math ``judge.py`` with the math dimension set of ``config/``, METHODS §4.5), paraphrased in
  English and Chinese: an irrelevant answer, one with an *essential factual error* (a wrong result) or
  a harmful one scores 1-2; no serious error but low quality 3-4; basically meets the needs 5-6; close to
  the reference 7-8; clearly better 9-10. No worked example. Scores comparable with published
  MathUserEval numbers (given a comparable judge); the default of ``eval mathusereval``.
* ``partial_credit`` (``prompts/math_critique.<lang>.txt``, our own text): the same bands, except that a
  wrong result reached by a sound approach scores 3-4 (partial credit; never above 4), and a right result
  with weak reasoning 5-6; a worked example anchors small local judges. The pipelines' default (critic,
  ``critic train``, ``bon``): the paper's Math-Critique critic also grades partial correctness (METHODS
  §4.2, bands unverified), and the shipped thresholds and configs were set with it.

Parsing follows the official ``judge.py`` (METHODS §4.5): take the **last** ``{...}`` block and read
its ``'key': value`` pairs; the score is ``'overall score'`` (or the official ``'综合得分'``); if the
block has no overall score, the fallback regex ``'overall score': (\\d+(\\.\\d{1,2})?)`` is tried on the
whole answer. Our stricter rules: every score must be an integer in 1..10 (``7.5`` or ``11`` make
the answer unparseable, and it is retried like one without a score). An answer that still does not
parse after ``attempts`` tries is recorded as a failure (``status: "failed"``), never scored; the
official ``show_result.py`` -1 is only an optional view in :mod:`alignkit.evals.mathusereval`.

Two critics share the row layout (``id, status, score, dimensions, critique, failure``):

* :class:`MathCritic` — any judge spec through :class:`~alignkit.judge.client.Judge` (cache, retries,
  failure records). ``force_format`` is the weak-judge mode of the LongReward scorer: the judge's
  reply is continued from ``{'overall score': `` so it only chooses the number (``direct``), or the
  score is the expectation of ``1..10`` under its next-token distribution (``expected``, a float);
* :class:`VerifierCritic` — no model: the answer's final result is checked against the question's
  checkable answer (``alignkit.data.mathgen.check_answer``); correct -> ``correct_score`` (10),
  wrong -> ``wrong_score`` (1). A question without a checkable answer is a recorded failure.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from alignkit.config import StrictModel
from alignkit.judge.client import FormatForcing, Judge, JudgeConfig, Parsed, ParseError
from alignkit.judge.longreward import _Stages, detect_language, expected_score
from alignkit.judge.prompts import fill, load_prompt

Rubric = Literal["official", "partial_credit"]
PROMPTS: dict[str, str] = {"official": "math_critique_official", "partial_credit": "math_critique"}
DIMENSIONS = ("factual_correctness", "user_needs", "logical_coherence", "completeness")
# The dictionary keys of our English prompt and of the official Chinese protocol -> our names.
KEYS = {
    "factual correctness": "factual_correctness",
    "事实正确性": "factual_correctness",
    "meets user needs": "user_needs",
    "满足用户需求": "user_needs",
    "logical coherence": "logical_coherence",
    "逻辑连贯性": "logical_coherence",
    "completeness": "completeness",
    "完备性": "completeness",
    "overall score": "overall",
    "综合得分": "overall",
}
_BLOCK = re.compile(r"\{[^{}]*\}")
_PAIR = re.compile(r"""['"](.*?)['"]\s*:\s*(-?\d+(?:\.\d+)?)""")
_FALLBACK = re.compile(r"""['"](?:overall score|综合得分)['"]\s*:\s*(-?\d+(?:\.\d{1,2})?)""", re.I)
_CUE = {"en": "\n{'overall score': ", "zh": "\n{'综合得分': "}


@dataclass(frozen=True)
class CritiqueScore:
    overall: float
    dimensions: dict[str, int]


def _score(raw: str, key: str) -> int:
    value = float(raw)
    if value != int(value):
        raise ParseError(f"score {raw} for {key!r} is not an integer")
    if not 1 <= value <= 10:
        raise ParseError(f"score {raw} for {key!r} outside 1-10")
    return int(value)


def parse_critique(text: str) -> CritiqueScore:
    """Scores of the last ``{...}`` block (see the module docstring); :class:`ParseError` otherwise."""
    text = text or ""
    blocks = _BLOCK.findall(text)
    dims: dict[str, int] = {}
    if blocks:
        for key, raw in _PAIR.findall(blocks[-1]):
            name = KEYS.get(key.strip().lower(), key.strip())
            dims[name] = _score(raw, key)
    if "overall" not in dims:
        found = _FALLBACK.findall(text)
        if not found:
            raise ParseError("no overall score in the answer" if blocks else "no {...} score block in the answer")
        dims["overall"] = _score(found[-1], "overall score")
    overall = dims.pop("overall")
    return CritiqueScore(float(overall), dims)


def expected_critique(dist: dict[str, float]) -> CritiqueScore:
    """Weak-judge ``expected`` mode: E[k] over the tokens ``1``..``10`` after the overall-score cue."""
    return CritiqueScore(expected_score(dist, lo=1, hi=10), {})


class CritiqueConfig(StrictModel):
    """How the Math-Critique judge is asked and its answers parsed."""

    rubric: Rubric = "partial_credit"
    """official: the MathUserEval judge's rubric (a wrong result is an essential error: 1-2), for scores
    comparable with published MathUserEval numbers; partial_credit: a wrong result from a sound approach
    scores 3-4, with a worked example for small judges (the pipelines' default; `eval mathusereval`
    defaults to official). See docs/self_critique.md."""
    language: Literal["auto", "en", "zh"] = "auto"
    """Prompt language: auto = English iff the question has > 4x more Latin letters than CJK characters."""
    max_tokens: int = Field(default=512, ge=1)
    """Judge output budget (critique + score block)."""
    attempts: int = Field(default=3, ge=1)
    """Judge attempts until the answer parses (then the row is recorded as failed)."""
    first_temperature: float = Field(default=0.0, ge=0.0)
    """Temperature of the first attempt (the official MathUserEval judge runs at 0)."""
    retry_temperature: float = Field(default=0.7, ge=0.0)
    """Temperature of later attempts (a retry at 0 would repeat the same answer)."""
    stop: list[str] = Field(default_factory=lambda: ["\n[Question]", "\nNow grade", "\n[题目]"], max_length=4)
    """Stop sequences that cut a small judge inventing the next example."""
    force_format: Literal["off", "after_analysis", "direct", "expected"] = "off"
    """Weak-judge mode (not in the paper; as in the LongReward scorer): continue the reply from
    "{'overall score': " so the judge only picks the number; expected = the expectation of 1..10 under
    its next-token distribution (a float score; needs top log-probabilities)."""


def critique_prompt(cfg: CritiqueConfig, question: str, reference: str, answer: str) -> tuple[str, str]:
    """The judge's prompt under ``cfg.rubric`` and ``cfg.language``, and the language it is in."""
    lang = detect_language(question) if cfg.language == "auto" else cfg.language
    return fill(load_prompt(PROMPTS[cfg.rubric], lang), question=question, reference=reference, answer=answer), lang


@dataclass
class CritiqueItem:
    """One answer to criticise. ``gold`` is the checkable final answer (verifier critic only)."""

    id: str
    question: str
    reference: str
    answer: str
    gold: str | None = None


def _row(item: CritiqueItem, outcome: Parsed) -> dict[str, Any]:
    if outcome.ok:
        return {"id": item.id, "status": "scored", "score": outcome.value.overall,
                "dimensions": outcome.value.dimensions, "critique": outcome.text,
                "attempts": outcome.attempts, "forced": outcome.forced, "failure": None}
    return {"id": item.id, "status": "failed", "score": None, "dimensions": {}, "critique": outcome.text[-500:],
            "attempts": outcome.attempts, "forced": False, "failure": outcome.error}


class MathCritic:
    """Math-Critique with any judge (``local:`` or ``openai:``)."""

    kind = "judge"

    def __init__(self, judge: Judge, config: CritiqueConfig | None = None):
        self.judge = judge
        self.cfg = config or CritiqueConfig()

    def identity(self) -> dict[str, Any]:
        return {"kind": self.kind, "judge": self.judge.model_id, "critique": self.cfg.model_dump()}

    def _one(self, item: CritiqueItem) -> dict[str, Any]:
        prompt, lang = critique_prompt(self.cfg, item.question, item.reference, item.answer)
        mode = self.cfg.force_format
        out = self.judge.complete_parsed(
            [{"role": "user", "content": prompt}], parse_critique, self.cfg.max_tokens,
            attempts=self.cfg.attempts, first_temperature=self.cfg.first_temperature,
            retry_temperature=self.cfg.retry_temperature, stop=self.cfg.stop,
            force=FormatForcing(_CUE[lang], "}", max_tokens=4, stop=(",", "\n")) if mode != "off" else None,
            force_mode=mode, expect=expected_critique if mode == "expected" else None,
        )
        return _row(item, out)

    def critique(self, items: list[CritiqueItem], progress: bool = False) -> list[dict[str, Any]]:
        """One row per item, in input order (see :func:`_row`)."""
        rows: dict[int, dict[str, Any]] = {}

        def job(i: int) -> None:
            rows[i] = self._one(items[i])

        with _Stages(progress) as stages, ThreadPoolExecutor(self.judge.concurrency) as pool:
            stages.run(pool, [("critique", partial(job, i)) for i in range(len(items))])
        return [rows[i] for i in range(len(items))]

    def close(self) -> None:
        self.judge.close()


class VerifierCritic:
    """Exact-answer check -> score; no model involved."""

    kind = "verifier"

    def __init__(self, correct_score: int = 10, wrong_score: int = 1):
        self.correct_score, self.wrong_score = correct_score, wrong_score

    def identity(self) -> dict[str, Any]:
        return {"kind": self.kind, "correct_score": self.correct_score, "wrong_score": self.wrong_score}

    def critique(self, items: list[CritiqueItem], progress: bool = False) -> list[dict[str, Any]]:
        from alignkit.data.mathgen import check_answer, extract_final_answer

        rows = []
        for it in items:
            if it.gold is None:
                rows.append(_row(it, Parsed(False, None, "", 1, "no checkable answer for this question")))
                continue
            got = extract_final_answer(it.answer)
            ok = check_answer(it.answer, it.gold)
            text = f"final answer {got!r} {'matches' if ok else 'does not match'} the reference {it.gold!r}"
            rows.append(_row(it, Parsed(True, CritiqueScore(
                float(self.correct_score if ok else self.wrong_score), {}), text, 1)))
        return rows

    def close(self) -> None:
        pass


class CriticConfig(StrictModel):
    """Which critic scores answers: the verifier (exact-answer check) or a Math-Critique judge."""

    kind: Literal["verifier", "judge"] = "verifier"
    """verifier: score from the exact-answer check (needs checkable answers); judge: Math-Critique prompt."""
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    """The judge (kind=judge): local:<model> (e.g. the policy itself) or openai:<base_url>#<model>."""
    critique: CritiqueConfig = Field(default_factory=CritiqueConfig)
    """Prompting and parsing of the judge (kind=judge)."""
    correct_score: int = Field(default=10, ge=1, le=10)
    """Verifier critic: the score of a correct final answer."""
    wrong_score: int = Field(default=1, ge=1, le=10)
    """Verifier critic: the score of a wrong or missing final answer."""

    @model_validator(mode="after")
    def _order(self):
        if self.wrong_score >= self.correct_score:
            raise ValueError(f"wrong_score={self.wrong_score} must be below correct_score={self.correct_score}")
        return self


def make_critic(cfg: CriticConfig, cache_path: str | Path | None = None, engine=None) -> MathCritic | VerifierCritic:
    """Build the critic ``cfg`` describes (``engine`` shares a loaded model with a ``local:`` judge)."""
    if cfg.kind == "verifier":
        return VerifierCritic(cfg.correct_score, cfg.wrong_score)
    from alignkit.judge.client import judge_from_config

    return MathCritic(judge_from_config(cfg.judge, cache_path=cache_path, engine=engine), cfg.critique)
