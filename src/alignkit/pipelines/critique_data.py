"""Training rows from critic-scored samples: Critique-RFT selection and Critique-DPO pairs (METHODS §4.3-4.4).

Input: one row per sampled answer, ``{"prompt_id", "k", "prompt", "response", "finish_reason",
"status": "scored" | "failed", "score"}`` (the critic's output merged into the sample rows).
A failed critique is never treated as a score: such samples are counted and left out.

**RFT** (:func:`select_rft`), per question:

1. drop samples the critic could not score, empty ones and (``drop_truncated``, the default) samples
   cut by the token budget (``finish_reason == "length"``: a truncated answer is not taught);
2. keep samples with ``score >= threshold``;
3. de-duplicate: two answers are duplicates when their normalised text is equal (``dedup: exact`` —
   whitespace collapsed; ``dedup: normalized`` — also lower-cased with punctuation and spaces
   removed); the higher-scored copy (then the lower sample index) stays;
4. cap: at most ``max_per_question``, highest score first (ties: lower sample index).

**DPO pairs** (:func:`build_critique_pairs`), per question, over its scored, non-empty (and, with
``drop_truncated``, untruncated) samples ordered by score (descending; ties by sample index): the question is kept only when it has
both a high answer (``score >= chosen_min``) and a low one, with a gap of at least ``min_gap``.
Pair i joins the i-th best with the i-th worst sample while the chosen one is ``>= chosen_min`` and
the gap is ``>= min_gap`` (up to ``pairs_per_question``); a pair whose texts are equal after
normalisation is skipped (nothing to learn). Ties therefore never make a pair (their gap is 0).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

Dedup = Literal["exact", "normalized"]


def normalise(text: str, dedup: Dedup) -> str:
    if dedup == "exact":
        return " ".join(text.split())
    return re.sub(r"[\W_]+", "", text.lower())


def _by_question(rows: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    out: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        out.setdefault(str(r["prompt_id"]), []).append(r)
    return out


def _usable(r: Mapping[str, Any], drop_truncated: bool) -> bool:
    cut = drop_truncated and r.get("finish_reason") == "length"
    return r["status"] == "scored" and not cut and bool(r["response"].strip())


@dataclass
class RFTStats:
    questions: int = 0
    samples: int = 0
    critic_failed: int = 0
    truncated_or_empty: int = 0
    below_threshold: int = 0
    duplicates: int = 0
    over_cap: int = 0
    kept: int = 0
    questions_with_kept: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def select_rft(
    rows: Iterable[Mapping[str, Any]], threshold: float, max_per_question: int, dedup: Dedup = "exact",
    drop_truncated: bool = True,
) -> tuple[list[dict[str, Any]], RFTStats]:
    """The samples RFT trains on (input order within each question by score, then index) and counts."""
    stats, kept = RFTStats(), []
    for _, samples in _by_question(rows).items():
        stats.questions += 1
        stats.samples += len(samples)
        good = []
        for r in samples:
            if r["status"] != "scored":
                stats.critic_failed += 1
            elif not _usable(r, drop_truncated):
                stats.truncated_or_empty += 1
            elif r["score"] < threshold:
                stats.below_threshold += 1
            else:
                good.append(r)
        good.sort(key=lambda r: (-r["score"], r["k"]))
        seen, unique = set(), []
        for r in good:
            key = normalise(r["response"], dedup)
            if key in seen:
                stats.duplicates += 1
                continue
            seen.add(key)
            unique.append(r)
        stats.over_cap += max(0, len(unique) - max_per_question)
        unique = unique[:max_per_question]
        stats.kept += len(unique)
        stats.questions_with_kept += bool(unique)
        kept.extend(dict(r) for r in unique)
    return kept, stats


@dataclass
class PairStats:
    questions: int = 0
    no_high: int = 0
    no_gap: int = 0
    identical: int = 0
    pairs: int = 0
    questions_with_pairs: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def build_critique_pairs(
    rows: Iterable[Mapping[str, Any]], chosen_min: float, min_gap: float, pairs_per_question: int = 1,
    dedup: Dedup = "exact", drop_truncated: bool = True,
) -> tuple[list[dict[str, Any]], PairStats]:
    """Preference rows ``{"prompt", "chosen", "rejected", "prompt_id", "chosen_score", "rejected_score"}``."""
    stats, pairs = PairStats(), []
    for pid, samples in _by_question(rows).items():
        stats.questions += 1
        ranked = sorted((r for r in samples if _usable(r, drop_truncated)), key=lambda r: (-r["score"], r["k"]))
        if not ranked or ranked[0]["score"] < chosen_min:
            stats.no_high += 1
            continue
        made = ident = 0
        for i in range(min(pairs_per_question, len(ranked) // 2)):
            hi, lo = ranked[i], ranked[len(ranked) - 1 - i]
            if hi["score"] < chosen_min or hi["score"] - lo["score"] < min_gap:
                break
            if normalise(hi["response"], dedup) == normalise(lo["response"], dedup):
                ident += 1
                continue
            pairs.append({
                "prompt": hi["prompt"],
                "chosen": [{"role": "assistant", "content": hi["response"]}],
                "rejected": [{"role": "assistant", "content": lo["response"]}],
                "prompt_id": pid,
                "chosen_score": hi["score"],
                "rejected_score": lo["score"],
            })
            made += 1
        stats.identical += ident
        if made == 0 and ident == 0:
            stats.no_gap += 1
        stats.pairs += made
        stats.questions_with_pairs += made > 0
    return pairs, stats
