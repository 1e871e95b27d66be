"""Aggregate labels into TRL-style preference rows.

The rule, per item (every label counts once, whoever gave it):

1. Items with fewer than ``min_labels`` labels are left out ("too_few_labels").
2. Count the votes for ``response_1``, ``response_2``, ``tie`` and ``both_bad``. The winner is the
   option with strictly more votes than every other option; with no strict winner the item is
   dropped ("no_majority").
3. A winning ``tie`` or ``both_bad`` drops the item ("tie" / "both_bad"): neither response is a
   usable "chosen".
4. ``agreement = votes(winner) / labels``; below ``min_agreement`` the item is dropped
   ("low_agreement").
5. Otherwise the row is ``{"prompt", "chosen": winner, "rejected": the other}`` with the prompt
   and responses exactly as imported (string or chat messages), plus ``meta`` unless disabled:
   item id, votes, agreement, label count, source line, the imported row's extra keys, and the
   per-criterion mean ratings of chosen and rejected.

The output file is written to a temporary name and renamed, so it is either complete or absent.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from alignkit.annotate import db as schema
from alignkit.annotate.db import Database
from alignkit.atomic import write_jsonl_atomic

VOTE_KEYS = ("response_1", "response_2", "tie", "both_bad")


@dataclass(frozen=True)
class Verdict:
    winner: str | None  # response_1 | response_2, or None when the item is dropped
    reason: str  # "ok" or why the item was dropped
    agreement: float


def aggregate(votes: Counter, min_labels: int = 1, min_agreement: float = 0.0) -> Verdict:
    """Apply the export rule (module docstring) to one item's vote counts."""
    n = sum(votes.values())
    if n == 0 or n < min_labels:
        return Verdict(None, "too_few_labels", 0.0)
    ranked = sorted(VOTE_KEYS, key=lambda k: -votes.get(k, 0))
    top = ranked[0]
    if votes.get(top, 0) == votes.get(ranked[1], 0):
        return Verdict(None, "no_majority", votes.get(top, 0) / n)
    agreement = votes[top] / n
    if top in ("tie", "both_bad"):
        return Verdict(None, top, agreement)
    if agreement < min_agreement:
        return Verdict(None, "low_agreement", agreement)
    return Verdict(top, "ok", agreement)


@dataclass
class ExportReport:
    written: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    path: str = ""


def preference_rows(db: Database, min_labels: int = 1, min_agreement: float = 0.0, meta: bool = True
                    ) -> tuple[list[dict[str, Any]], ExportReport]:
    """The exported rows and the count of dropped items per reason."""
    if min_labels < 1:
        raise ValueError(f"min_labels={min_labels}: expected >= 1")
    if not 0.0 <= min_agreement <= 1.0:
        raise ValueError(f"min_agreement={min_agreement}: expected a fraction in [0, 1]")
    i, lab = schema.items, schema.labels
    with db.read() as conn:
        item_rows = conn.execute(select(i).order_by(i.c.id)).all()
        label_rows = conn.execute(select(lab.c.item_id, lab.c.preferred, lab.c.ratings)).all()
    votes: dict[int, Counter] = defaultdict(Counter)
    ratings: dict[int, list[dict]] = defaultdict(list)
    for r in label_rows:
        votes[r.item_id][r.preferred] += 1
        ratings[r.item_id].append(json.loads(r.ratings))
    report = ExportReport()
    out = []
    for item in item_rows:
        v = aggregate(votes[item.id], min_labels, min_agreement)
        if v.winner is None:
            report.dropped[v.reason] += 1
            continue
        loser = "response_2" if v.winner == "response_1" else "response_1"
        row: dict[str, Any] = {
            "prompt": json.loads(item.prompt),
            "chosen": json.loads(getattr(item, v.winner)),
            "rejected": json.loads(getattr(item, loser)),
        }
        if meta:
            n = sum(votes[item.id].values())
            row["meta"] = {
                "item_id": item.id,
                "n_labels": n,
                "votes": {k: votes[item.id].get(k, 0) for k in VOTE_KEYS},
                "agreement": round(v.agreement, 6),
                "source": item.source,
                "extra": json.loads(item.extra),
                "ratings": _mean_ratings(ratings[item.id], v.winner, loser),
            }
        out.append(row)
    report.written = len(out)
    report.dropped = dict(report.dropped)
    return out, report


def _mean_ratings(rs: list[dict], winner: str, loser: str) -> dict[str, dict[str, float]]:
    sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    for r in rs:
        for criterion, pair in r.items():
            s = sums[criterion]
            s[0] += pair[winner]
            s[1] += pair[loser]
            s[2] += 1
    return {c: {"chosen": round(s[0] / s[2], 4), "rejected": round(s[1] / s[2], 4)} for c, s in sums.items()}


def export(db: Database, out: str | Path, min_labels: int = 1, min_agreement: float = 0.0,
           meta: bool = True) -> ExportReport:
    """Aggregate and write ``out``; returns what was written and dropped."""
    rows, report = preference_rows(db, min_labels, min_agreement, meta)
    write_jsonl_atomic(out, rows)
    report.path = str(out)
    return report
