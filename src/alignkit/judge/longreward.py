"""LongReward (Zhang et al. 2024, arXiv 2410.21252): four AI-feedback scores for a long-context answer.

For a (context C, query q, answer a), an off-the-shelf LLM judge gives, each on 0-10
(METHODS §1.5):

* **helpfulness** and **logicality** — judged from (q, a) only; the judge never sees C (by design);
* **faithfulness** — the judge lists the answer's factual statements F (from q, a only); C is cut into
  non-overlapping ``faithfulness_chunk_tokens`` (128) token chunks; every statement retrieves its
  ``top_k`` (5) most similar chunks by cosine similarity of L2-normalised sentence embeddings
  (``S = Q_norm @ C_norm^T``), re-sorted by position in C; the judge rates each statement
  Fully (1) / Partially (0.5) / No (0) supported, and ``faithfulness = 10 * mean_f s(f)``;
* **completeness** — C is cut into ``completeness_chunk_tokens`` chunks; the judge extracts the
  information relevant to q from every chunk (once per (C, q), reused for all K answers), and then
  rates how completely a covers it, seeing the extracted information labelled by position
  ``"{round(100*start/total)}% - {round(100*end/total)}%"`` (token indices).

The final reward is the **mean** of the four scores (the paper's definition; it ranks like the
official code's sum). Parsing follows METHODS §1.4: the *last* ``[[number]]`` is the score (and it
must lie in [0, 10]); the *last* ``[[words]]`` is the support level ("fully" -> 1, else "partially"
-> 0.5, else 0). Every judge call goes through :meth:`Judge.complete_parsed` (5 attempts, the first
at temperature 0.01, then 0.95). A response with any dimension that still fails is recorded as
``status: "failed"`` with the reasons, and never gets a reward.

Our deviations, all configurable and documented in docs/longreward.md:

* prompt texts and few-shot examples are our own, in English and Chinese; the language follows the
  §1.5(d) rule (English iff ``#[A-z] > 4 * #CJK``) applied to the text the prompt is about: the query
  for helpfulness, logicality, statement extraction and completeness, the statement for support, the
  chunk for extraction;
* an answer may legitimately state no facts: the extraction prompt asks for ``<statement>NONE</statement>``
  then, and ``no_statements`` decides the faithfulness score ("full" = 10 by default: nothing
  unsupported was claimed; helpfulness and completeness already punish an empty answer);
  an extraction output with no ``<statement>`` tag at all is unparseable and retried;
* every judge call carries stop sequences (``stop``, per language) that cut an answer where a small
  judge starts inventing a further few-shot example;
* ``force_format`` (off by default) lets a judge too weak to follow the output format (such as the
  embedded 135M model) fill in only the value after a format cue given as an assistant-message prefix
  (or, in ``expected`` mode, gives the expected value under its next-token distribution); in these
  modes statement extraction yields one statement per attempt;
* ``max_statements`` can cap the statements judged per answer (the first ones are kept) to bound cost;
* the completeness chunk size defaults to ``min(4096, context_window // 2)`` so the extraction prompt
  fits a small judge (the official 4096 assumed a 128k-context judge).
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field

from alignkit.config import StrictModel
from alignkit.judge.client import FormatForcing, Judge, Parsed, ParseError
from alignkit.judge.prompts import fill, load_prompt
from alignkit.models import DEFAULT_ENCODER, DEFAULT_MODEL

DIMENSIONS = ("helpfulness", "logicality", "faithfulness", "completeness")
NO_INFO = "No relevant information"

_SCORE = re.compile(r"\[\[(\d+\.\d+|\d+)\]\]")
_LEVEL = re.compile(r"\[\[([ /a-zA-Z]+)\]\]")
_STATEMENT = re.compile(r"<statement>(.*?)</statement>", re.S)


# --------------------------------------------------------------------------- parsing (METHODS §1.4)
def parse_score(text: str) -> float:
    """The last ``[[k]]`` in ``text`` as a float in [0, 10]; otherwise :class:`ParseError`."""
    found = _SCORE.findall(text or "")
    if not found:
        raise ParseError("no [[score]] in the answer")
    value = float(found[-1])
    if not 0.0 <= value <= 10.0:
        raise ParseError(f"score {value} outside 0-10")
    return value


def parse_support(text: str) -> float:
    """The last ``[[level]]``: 1 if it contains "fully", else 0.5 if "partially", else 0."""
    found = _LEVEL.findall(text or "")
    if not found:
        raise ParseError("no [[support level]] in the answer")
    level = found[-1].lower()
    if "fully" in level:
        return 1.0
    if "partially" in level:
        return 0.5
    return 0.0


def parse_statements(text: str) -> list[str]:
    """``<statement>...</statement>`` contents, stripped, empty ones dropped; ``NONE`` means no statements.

    No tag at all (or only empty tags) is unparseable, as in the official code.
    """
    found = [s.strip() for s in _STATEMENT.findall(text or "")]
    found = [s for s in found if s]
    if not found:
        raise ParseError("no <statement> in the answer")
    facts = [s for s in found if s.upper() != "NONE"]
    return facts


def parse_extraction(text: str) -> str:
    """Extracted information; any answer mentioning the no-information phrase is normalised to it."""
    if NO_INFO.lower() in (text or "").lower():
        return NO_INFO
    if not (text or "").strip():
        raise ParseError("empty extraction")
    return text.strip()


def expected_score(dist: dict[str, float], lo: int = 0, hi: int = 10) -> float:
    """E[k] over the rating tokens ``lo``..``hi`` (default 0..10) among the judge's most likely next
    tokens (renormalised).

    ``dist`` maps token text to log-probability. A "10" counts only where the tokenizer has it as one
    token (digit-splitting tokenizers put its mass on "1"): a documented approximation.
    """
    probs: dict[int, float] = {}
    for tok, lp in dist.items():
        t = tok.strip()
        if t.isdigit() and lo <= int(t) <= hi:
            probs[int(t)] = probs.get(int(t), 0.0) + math.exp(lp)
    if not probs:
        raise ParseError("no rating digit among the judge's most likely next tokens")
    return sum(k * p for k, p in probs.items()) / sum(probs.values())


_LEVELS = {"fully supported": 1.0, "partially supported": 0.5, "no support": 0.0}


def expected_support(dist: dict[str, float]) -> float:
    """E[s] with s = 1 / 0.5 / 0 over next tokens that begin "Fully supported" / "Partially supported" /
    "No support" (case-insensitive; renormalised over those three)."""
    probs: dict[float, float] = {}
    for tok, lp in dist.items():
        t = tok.strip().lower()
        for level, value in _LEVELS.items():
            if t and level.startswith(t):
                probs[value] = probs.get(value, 0.0) + math.exp(lp)
                break
    if not probs:
        raise ParseError("no support level among the judge's most likely next tokens")
    return sum(v * p for v, p in probs.items()) / sum(probs.values())


def detect_language(text: str) -> Literal["en", "zh"]:
    """METHODS §1.5(d): English iff the count of U+0041..U+007A exceeds 4x the count of U+4E00..U+9FFF."""
    zh = sum(1 for ch in text if "\u4e00" <= ch <= "\u9fff")
    en = sum(1 for ch in text if "\u0041" <= ch <= "\u007a")
    return "en" if en > 4 * zh else "zh"


# --------------------------------------------------------------------------- chunking and retrieval
@dataclass(frozen=True)
class Chunk:
    text: str
    start: int  # token index in the whole context
    end: int
    total: int

    @property
    def position(self) -> str:
        return f"{round(self.start / self.total * 100)}% - {round(self.end / self.total * 100)}%"


def split_tokens(tokenizer: Any, text: str, size: int) -> list[Chunk]:
    """Consecutive non-overlapping ``size``-token chunks, decoded back to text (no special tokens added)."""
    if size < 1:
        raise ValueError(f"chunk size must be >= 1 (got {size})")
    ids = tokenizer(text, add_special_tokens=False).input_ids
    total = len(ids)
    return [
        Chunk(tokenizer.decode(ids[i : i + size]), i, min(i + size, total), total)
        for i in range(0, total, size)
    ]


def top_k_by_position(query_emb, chunk_emb, k: int) -> list[list[int]]:
    """For each query row, the indices of its ``k`` most cosine-similar chunks, sorted by position.

    ``query_emb``: (Q, d), ``chunk_emb``: (N, d) float tensors; both are L2-normalised here.
    """
    import torch

    q = torch.nn.functional.normalize(query_emb.float(), dim=-1)
    c = torch.nn.functional.normalize(chunk_emb.float(), dim=-1)
    scores = q @ c.T  # (Q, N) cosine similarities
    k = min(k, c.shape[0])
    top = torch.topk(scores, k, dim=-1).indices
    return [sorted(row.tolist()) for row in top]


# --------------------------------------------------------------------------- configuration
class LongRewardMaxTokens(StrictModel):
    """Judge output budget per call type (official values; lower them for small, slow judges)."""

    helpfulness: int = Field(default=512, ge=1)
    logicality: int = Field(default=512, ge=1)
    statements: int = Field(default=2048, ge=1)
    support: int = Field(default=512, ge=1)
    extract: int = Field(default=1024, ge=1)
    completeness: int = Field(default=512, ge=1)


class LongRewardStops(StrictModel):
    """Stop sequences per prompt language (at most 4 each: the OpenAI API limit).

    A capable judge stops after its rating anyway; a small one tends to continue by inventing the next
    few-shot example, whose own ``[[k]]`` would then be taken as the last match. The answer is cut
    where such a continuation starts.
    """

    en: list[str] = Field(
        default_factory=lambda: ["\nExample", "\n[Question]", "\n[Passages]", "\nNow judge"], max_length=4
    )
    zh: list[str] = Field(
        default_factory=lambda: ["\n示例", "\n[问题]", "\n[文段]", "\n现在请"], max_length=4
    )


class LongRewardConfig(StrictModel):
    """LongReward scorer settings (METHODS §1.5); defaults follow the official code unless noted."""

    faithfulness_chunk_tokens: int = Field(default=128, ge=8)
    """Token size of the retrieval chunks for faithfulness."""
    top_k: int = Field(default=5, ge=1)
    """Chunks retrieved per statement (re-sorted by position)."""
    completeness_chunk_tokens: int | None = Field(default=None, ge=64)
    """Token size of the extraction chunks; null = min(4096, context_window // 2)."""
    context_window: int | None = Field(default=None, ge=512)
    """The judge's context window; null = the local engine's, or 8192 for an HTTP judge."""
    tokenizer: str | None = None
    """Tokenizer for chunking; null = the local judge's own, or the embedded model's for an HTTP judge."""
    encoder: str = DEFAULT_ENCODER
    """Sentence encoder for retrieval (the embedded all-MiniLM-L6-v2 by default)."""
    language: Literal["auto", "en", "zh"] = "auto"
    """Prompt language: auto applies the §1.5(d) rule per prompt; en/zh force one."""
    max_tokens: LongRewardMaxTokens = Field(default_factory=LongRewardMaxTokens)
    stop: LongRewardStops = Field(default_factory=LongRewardStops)
    """Stop sequences of every judge call, per prompt language."""
    attempts: int = Field(default=5, ge=1)
    """Judge attempts per call until its answer parses."""
    first_temperature: float = Field(default=0.01, ge=0.0)
    retry_temperature: float = Field(default=0.95, ge=0.0)
    no_statements: Literal["full", "zero", "fail"] = "full"
    """Faithfulness of an answer with no factual statements: full = 10, zero = 0, fail = record a failure."""
    max_statements: int | None = Field(default=None, ge=1)
    """Judge at most this many statements per answer (the first ones); null = all."""
    force_format: Literal["off", "after_analysis", "direct", "expected"] = "off"
    """Weak-judge mode (not in the paper): off = official parsing; after_analysis = continue an
    unparseable answer with the format cue ("[Rating] [[", "[Verdict] [[", "<statement>") so the judge
    only fills in the value; direct = start every answer with the cue (no analysis, one short call);
    expected = like direct, but a rating or support level is the expectation under the judge's
    next-token distribution after the cue (G-Eval style), which separates answers a weak judge would
    otherwise rate identically (needs top log-probabilities from the backend)."""

    def resolved_completeness_chunk(self, context_window: int) -> int:
        return self.completeness_chunk_tokens or min(4096, context_window // 2)


@dataclass
class ScoreItem:
    """One response to score."""

    id: str
    prompt_id: str
    context: str
    query: str
    response: str


@dataclass
class _Work:
    item: ScoreItem
    scores: dict[str, float] = field(default_factory=dict)
    rationales: dict[str, Any] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)
    statements: list[str] | None = None
    support: list[dict[str, Any]] = field(default_factory=list)

    def note_forced(self, what: str, outcome: Parsed) -> None:
        if outcome.ok and outcome.forced:
            self.rationales.setdefault("forced_format", []).append(what)

    def fail(self, dimension: str, stage: str, outcome: Parsed | str) -> None:
        if isinstance(outcome, Parsed):
            self.failures.append(
                {
                    "dimension": dimension,
                    "stage": stage,
                    "error": outcome.error,
                    "attempts": outcome.attempts,
                    "last_output": outcome.text[-500:],
                }
            )
        else:
            self.failures.append({"dimension": dimension, "stage": stage, "error": outcome})


class LongRewardScorer:
    """Score responses on the four LongReward dimensions with one :class:`Judge`."""

    def __init__(self, judge: Judge, config: LongRewardConfig | None = None, *, encoder=None, tokenizer=None):
        self.judge = judge
        self.cfg = config or LongRewardConfig()
        self.context_window = self.cfg.context_window or judge.context_window or 8192
        self._tokenizer = tokenizer
        self._encoder = encoder
        self._encode_lock = threading.Lock()

    # -- resources -------------------------------------------------------------------------
    @property
    def tokenizer(self):
        if self._tokenizer is None:
            if self.cfg.tokenizer is not None:
                from alignkit.models import load_tokenizer

                self._tokenizer = load_tokenizer(self.cfg.tokenizer)
            elif self.judge.tokenizer is not None:
                self._tokenizer = self.judge.tokenizer
            else:
                from alignkit.models import load_tokenizer

                self._tokenizer = load_tokenizer(DEFAULT_MODEL)
        return self._tokenizer

    def _embed(self, texts: list[str]):
        import torch

        with self._encode_lock:
            if self._encoder is None:
                from alignkit.models import load_sentence_encoder

                self._encoder = load_sentence_encoder(self.cfg.encoder)
            emb = self._encoder.encode(texts, convert_to_tensor=True, show_progress_bar=False)
        return torch.as_tensor(emb).cpu()

    def _lang(self, text: str) -> str:
        return detect_language(text) if self.cfg.language == "auto" else self.cfg.language

    def _ask(
        self, template: str, lang: str, parse: Callable[[str], Any], max_tokens: int, **values: str
    ) -> Parsed:
        prompt = fill(load_prompt(f"longreward_{template}", lang), **values)
        force = _forcing(template, lang, max_tokens)
        mode = self.cfg.force_format if force is not None else "off"
        expect = _EXPECT.get(template) if mode == "expected" else None
        if mode == "expected" and expect is None:
            mode = "direct"  # statements: text, not a number to take an expectation of
        return self.judge.complete_parsed(
            [{"role": "user", "content": prompt}],
            parse,
            max_tokens,
            attempts=self.cfg.attempts,
            first_temperature=self.cfg.first_temperature,
            retry_temperature=self.cfg.retry_temperature,
            stop=getattr(self.cfg.stop, lang),
            force=force,
            force_mode=mode,
            expect=expect,
        )

    # -- the four dimensions ------------------------------------------------------------------
    def _rate(self, work: _Work, dimension: str) -> None:
        it = work.item
        out = self._ask(
            dimension,
            self._lang(it.query),
            parse_score,
            getattr(self.cfg.max_tokens, dimension),
            question=it.query,
            answer=it.response,
        )
        work.note_forced(dimension, out)
        if out.ok:
            work.scores[dimension] = out.value
            work.rationales[dimension] = out.text
        else:
            work.fail(dimension, dimension, out)

    def _statements(self, work: _Work) -> None:
        it = work.item
        out = self._ask(
            "statements",
            self._lang(it.query),
            parse_statements,
            self.cfg.max_tokens.statements,
            question=it.query,
            answer=it.response,
        )
        work.note_forced("statements", out)
        if not out.ok:
            work.fail("faithfulness", "statements", out)
            return
        facts = out.value
        if self.cfg.max_statements is not None and len(facts) > self.cfg.max_statements:
            work.rationales["statements_truncated"] = len(facts)
            facts = facts[: self.cfg.max_statements]
        work.statements = facts

    def _support(self, work: _Work, statement: str, passages: list[Chunk]) -> dict[str, Any]:
        lang = self._lang(statement)
        head = "[Passage {}]\n{}" if lang == "en" else "[文段{}]\n{}"
        text = "\n\n".join(head.format(j + 1, c.text) for j, c in enumerate(passages))
        out = self._ask(
            "support", lang, parse_support, self.cfg.max_tokens.support, statement=statement, passages=text
        )
        return {
            "statement": statement,
            "passages": [c.start for c in passages],
            "ok": out.ok,
            "score": out.value,
            "rationale": out.text,
            "forced": out.forced,
            "outcome": out,
        }

    def _extract(self, chunk: Chunk, query: str) -> Parsed:
        return self._ask(
            "extract",
            self._lang(chunk.text),
            parse_extraction,
            self.cfg.max_tokens.extract,
            chunk=chunk.text,
            question=query,
        )

    def _completeness(self, work: _Work, infos: list[tuple[str, str]]) -> None:
        it = work.item
        lang = self._lang(it.query)
        head = (
            "[Relevant information from part {} of the document]\n{}"
            if lang == "en"
            else "[文档{}部分的有关信息]\n{}"
        )
        info = "\n\n".join(head.format(pos, text) for pos, text in infos)
        out = self._ask(
            "completeness",
            lang,
            parse_score,
            self.cfg.max_tokens.completeness,
            question=it.query,
            information=info,
            answer=it.response,
        )
        work.note_forced("completeness", out)
        if out.ok:
            work.scores["completeness"] = out.value
            work.rationales["completeness"] = out.text
        else:
            work.fail("completeness", "completeness", out)

    # -- orchestration ------------------------------------------------------------------------------
    def score(self, items: Sequence[ScoreItem], progress: bool = True) -> list[dict[str, Any]]:
        """Score every item; results in input order (see :meth:`_result` for the row layout)."""
        works = [_Work(it) for it in items]
        prompts: dict[str, tuple[str, str]] = {}  # (context, query) key -> (context, query)
        for w in works:
            prompts.setdefault(_prompt_key(w.item), (w.item.context, w.item.query))
        comp_size = self.cfg.resolved_completeness_chunk(self.context_window)
        comp_chunks = {k: split_tokens(self.tokenizer, c, comp_size) for k, (c, _) in prompts.items()}
        faith_chunks = {
            k: split_tokens(self.tokenizer, c, self.cfg.faithfulness_chunk_tokens)
            for k, (c, _) in prompts.items()
        }
        extractions: dict[tuple[str, int], Parsed] = {}

        with _Stages(progress) as stages, ThreadPoolExecutor(self.judge.concurrency) as pool:
            # Stage 1: everything that needs no other judge output.
            jobs: list[tuple[str, Callable[[], None]]] = []
            for key, chunks in comp_chunks.items():
                query = prompts[key][1]
                for j, ch in enumerate(chunks):
                    jobs.append(
                        ("chunk extraction", _setter(extractions, (key, j), self._extract, ch, query))
                    )
            # Dimension by dimension: the calls in flight together then share the instructions and
            # the question (responses to one prompt are adjacent), which a local judge prefills once.
            for dimension in ("helpfulness", "logicality"):
                jobs += [(dimension, _call(self._rate, w, dimension)) for w in works]
            jobs += [("statements", _call(self._statements, w)) for w in works]
            stages.run(pool, jobs)

            # Retrieval: embed each context's chunks once and all statements together.
            chunk_emb = {}
            for key, chunks in faith_chunks.items():
                if chunks and any(w.statements for w in works if _prompt_key(w.item) == key):
                    chunk_emb[key] = self._embed([c.text for c in chunks])
            todo = [(w, s) for w in works if w.statements for s in w.statements]
            retrieved: dict[tuple[int, int], list[Chunk]] = {}
            if todo:
                stmt_emb = self._embed([s for _, s in todo])
                for row, (w, _) in enumerate(todo):
                    key = _prompt_key(w.item)
                    if key not in chunk_emb:
                        continue
                    idx = top_k_by_position(stmt_emb[row : row + 1], chunk_emb[key], self.cfg.top_k)[0]
                    retrieved[(id(w), row)] = [faith_chunks[key][i] for i in idx]

            # Stage 2: support judgements and completeness (needs the extractions).
            jobs = []
            support_out: dict[tuple[int, int], dict[str, Any]] = {}
            for row, (w, s) in enumerate(todo):
                passages = retrieved.get((id(w), row))
                if passages is None:
                    w.fail("faithfulness", "retrieval", "the context is empty: nothing to retrieve")
                    continue
                jobs.append(("support", _setter(support_out, (id(w), row), self._support, w, s, passages)))
            for w in works:
                key = _prompt_key(w.item)
                outs = [extractions[(key, j)] for j in range(len(comp_chunks[key]))]
                failed = [o for o in outs if not o.ok]
                if failed:
                    w.fail("completeness", "chunk extraction", failed[0])
                elif not outs:
                    w.fail("completeness", "chunk extraction", "the context is empty: nothing to extract")
                else:
                    infos = [(ch.position, o.value) for ch, o in zip(comp_chunks[key], outs, strict=True)]
                    w.rationales["completeness_information"] = dict(infos)
                    jobs.append(("completeness", _call(self._completeness, w, infos)))
            stages.run(pool, jobs)

        # Aggregate faithfulness per response.
        for row, (w, _) in enumerate(todo):
            res = support_out.get((id(w), row))
            if res is not None:
                w.support.append(res)
        for w in works:
            self._faithfulness(w)
        return [self._result(w) for w in works]

    def _faithfulness(self, w: _Work) -> None:
        if w.statements is None:
            return  # extraction failed and was recorded
        if not w.statements:
            if self.cfg.no_statements == "fail":
                w.fail(
                    "faithfulness", "statements", "the answer has no factual statements (no_statements=fail)"
                )
                return
            w.scores["faithfulness"] = 10.0 if self.cfg.no_statements == "full" else 0.0
            w.rationales["faithfulness"] = (
                f"no factual statements (policy no_statements={self.cfg.no_statements})"
            )
            return
        bad = [r for r in w.support if not r["ok"]]
        if bad:
            w.fail("faithfulness", "support", bad[0]["outcome"])
            return
        if len(w.support) != len(w.statements):
            return  # a retrieval failure was recorded
        w.scores["faithfulness"] = 10.0 * sum(r["score"] for r in w.support) / len(w.support)
        w.rationales["faithfulness"] = [
            {k: r[k] for k in ("statement", "score", "passages", "rationale", "forced")} for r in w.support
        ]

    def _result(self, w: _Work) -> dict[str, Any]:
        if "forced_format" in w.rationales:
            w.rationales["forced_format"].sort()
        complete = all(d in w.scores for d in DIMENSIONS) and not w.failures
        return {
            "id": w.item.id,
            "prompt_id": w.item.prompt_id,
            "status": "scored" if complete else "failed",
            "scores": {d: w.scores.get(d) for d in DIMENSIONS},
            "reward": sum(w.scores[d] for d in DIMENSIONS) / len(DIMENSIONS) if complete else None,
            "rationales": w.rationales,
            # threads record failures in completion order; report them in dimension order
            "failures": sorted(w.failures, key=lambda f: (DIMENSIONS.index(f["dimension"]), f["stage"])),
        }


# Format cues of our prompt files, per template kind and language (weak-judge mode, ``force_format``).
_RATING_CUE = {"en": "\n[Rating]\n[[", "zh": "\n[评分]\n[["}
_VERDICT_CUE = {"en": "\n[Verdict]\n[[", "zh": "\n[结论]\n[["}


_EXPECT: dict[str, Callable[[dict[str, float]], float]] = {
    "helpfulness": expected_score,
    "logicality": expected_score,
    "completeness": expected_score,
    "support": expected_support,
}


def _forcing(template: str, lang: str, max_tokens: int) -> FormatForcing | None:
    if template in ("helpfulness", "logicality", "completeness"):
        return FormatForcing(_RATING_CUE[lang], "]]", max_tokens=6)
    if template == "support":
        return FormatForcing(_VERDICT_CUE[lang], "]]", max_tokens=8)
    if template == "statements":  # one statement, in the judge's own words, instead of free text
        return FormatForcing(
            "<statement>", "</statement>", max_tokens=min(96, max_tokens), keep_answer=False, stop=("\n",)
        )
    return None  # extraction accepts any non-empty text


def _prompt_key(it: ScoreItem) -> str:
    return hashlib.sha256(f"{it.context}\x00{it.query}".encode()).hexdigest()


def _call(fn, *args) -> Callable[[], None]:
    return lambda: fn(*args)


def _setter(store: dict, key, fn, *args) -> Callable[[], None]:
    def run() -> None:
        store[key] = fn(*args)

    return run


class _Stages:
    """Runs jobs on a pool with one progress task per job kind."""

    def __init__(self, enabled: bool):
        from alignkit.progress import Progress

        self._progress = Progress(enabled)

    def __enter__(self):
        self._progress.__enter__()
        return self

    def run(self, pool: ThreadPoolExecutor, jobs: list[tuple[str, Callable[[], None]]]) -> None:
        tasks = {kind: self._progress.task(kind, total=sum(1 for k, _ in jobs if k == kind))
                 for kind in dict.fromkeys(k for k, _ in jobs)}
        futures = []
        for kind, job in jobs:
            fut = pool.submit(job)
            fut.add_done_callback(lambda _f, t=tasks[kind]: self._progress.advance(t))
            futures.append(fut)
        for fut in futures:
            fut.result()  # re-raise programming errors; judge failures are already recorded

    def __exit__(self, *exc):
        return self._progress.__exit__(*exc)
