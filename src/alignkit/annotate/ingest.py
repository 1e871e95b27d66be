"""Import JSONL rows into annotation items (one item = one prompt and two responses).

Accepted rows (TRL conventions; text fields are a string or a list of chat messages
``{"role", "content"}``, and the prompt keeps whichever form it was given in):

* ``{"prompt": ..., "responses": [r1, r2, ...]}`` with two or more responses (e.g. the output
  of ``alignkit generate --n 2``; ``completions`` is accepted as another name for
  ``responses``). Pairs are formed by ``pairs``: ``"all"`` makes every unordered pair
  (K responses give K(K-1)/2 items), ``"adjacent"`` makes (r1, r2), (r2, r3), ... (K-1 items).
* ``{"prompt": ..., "chosen": ..., "rejected": ...}``: one item; the existing preference is kept
  as ``imported_preference`` in the item's metadata and annotators are not told about it.

When the prompt is a list of messages, a plain-string response is stored as one assistant
message, so exported rows are conversational throughout (as TRL expects); a plain-string prompt
with message-list responses is an error. Other keys of a row are kept and exported under ``meta.extra``. The whole file is validated
before anything is written and then inserted in one transaction, so a bad row means nothing is
imported; errors name ``file:line`` and the field. Degenerate pairs (identical responses, or an
empty response) are skipped and counted by default, or refused with ``degenerate="error"``. A pair
already in the database (same prompt, same two responses in either order) is skipped, so
re-running an import is harmless.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import insert, select

from alignkit.annotate import db as schema
from alignkit.annotate.db import Database, json_dumps
from alignkit.data.records import check_text, iter_records, require
from alignkit.errors import DataError

Pairing = Literal["all", "adjacent"]
DegeneratePolicy = Literal["skip", "error"]
_TEXT_KEYS = {"prompt", "responses", "completions", "chosen", "rejected"}



@dataclass
class _Pair:
    prompt: Any
    first: Any
    second: Any
    source: str
    extra: dict[str, Any]
    key: str


@dataclass
class ImportReport:
    """What an import did (printed by the CLI)."""

    rows: int = 0
    added: int = 0
    duplicates: int = 0
    degenerate: dict[str, int] = field(default_factory=lambda: {"identical": 0, "empty": 0})
    redundancy: int = 0


def _check_text(row: dict, key: str, where: str, name: str | None = None, value: Any = None) -> Any:
    if value is None:
        value = require(row, key, where)
    return check_text(value, where, name or key)


def text_content(value: Any) -> str:
    """The visible text of a stored field (message contents joined for conversations)."""
    return value if isinstance(value, str) else "\n\n".join(m["content"] for m in value)


def pair_key(prompt: Any, first: Any, second: Any) -> str:
    """Identity of a pair: the prompt plus the unordered pair of responses."""
    a, b = sorted([json_dumps(first), json_dumps(second)])
    return hashlib.sha256(json_dumps([prompt, a, b]).encode("utf-8")).hexdigest()


def _pairs_from_row(row: Any, where: str, pairs: Pairing, policy: DegeneratePolicy,
                    report: ImportReport) -> list[_Pair]:
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    prompt = _check_text(row, "prompt", where)
    if not text_content(prompt).strip():
        raise DataError(f"{where}: field 'prompt': empty")
    extra = {k: v for k, v in row.items() if k not in _TEXT_KEYS}
    if "responses" in row and "completions" in row:
        raise DataError(f"{where}: field 'completions': give either 'responses' or 'completions', not both")
    list_key = "completions" if "completions" in row else "responses"
    has_pref = "chosen" in row or "rejected" in row
    if list_key in row and has_pref:
        raise DataError(f"{where}: field '{list_key}': give either '{list_key}' or 'chosen'/'rejected', not both")
    if has_pref:
        responses = [_check_text(row, "chosen", where), _check_text(row, "rejected", where)]
        names = ["chosen", "rejected"]
        index_pairs = [(0, 1)]
        extra["imported_preference"] = "response_1"  # chosen is stored as response_1
    elif list_key in row:
        raw = row[list_key]
        if not isinstance(raw, list) or len(raw) < 2:
            raise DataError(f"{where}: field '{list_key}': expected a list of at least 2 responses")
        names = [f"{list_key}[{j}]" for j in range(len(raw))]
        responses = [_check_text(row, list_key, where, names[j], r) for j, r in enumerate(raw)]
        n = len(responses)
        if pairs == "all":
            index_pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
        else:
            index_pairs = [(i, i + 1) for i in range(n - 1)]
    else:
        raise DataError(f"{where}: field 'responses': missing (or give 'chosen' and 'rejected')")
    if isinstance(prompt, list):
        responses = [[{"role": "assistant", "content": r}] if isinstance(r, str) else r for r in responses]
    else:
        for k, r in enumerate(responses):
            if isinstance(r, list):
                raise DataError(f"{where}: field '{names[k]}': a message list needs a message-list prompt "
                                      "(the prompt is a plain string)")

    out = []
    for i, j in index_pairs:
        problem = None
        for k in (i, j):
            if not text_content(responses[k]).strip():
                problem = ("empty", f"field '{names[k]}': empty response")
        if problem is None and json_dumps(responses[i]) == json_dumps(responses[j]):
            problem = ("identical", f"fields '{names[i]}' and '{names[j]}': identical responses")
        if problem is not None:
            if policy == "error":
                raise DataError(f"{where}: {problem[1]} (degenerate pair; use --degenerate skip to skip it)")
            report.degenerate[problem[0]] += 1
            continue
        out.append(_Pair(prompt, responses[i], responses[j], where, extra, pair_key(prompt, responses[i], responses[j])))
    return out


def read_pairs(path: str | Path, pairs: Pairing = "all", degenerate: DegeneratePolicy = "skip"
               ) -> tuple[list[_Pair], ImportReport]:
    """Parse and validate a whole JSONL file (no database access)."""
    if pairs not in ("all", "adjacent"):
        raise ValueError(f"pairs={pairs!r}: expected 'all' or 'adjacent'")
    if degenerate not in ("skip", "error"):
        raise ValueError(f"degenerate={degenerate!r}: expected 'skip' or 'error'")
    report = ImportReport()
    out: list[_Pair] = []
    for rec in iter_records(path):
        report.rows += 1
        out.extend(_pairs_from_row(rec.value, rec.where, pairs, degenerate, report))
    if report.rows == 0:
        raise DataError(f"{path}: no rows")
    return out, report


def import_file(db: Database, path: str | Path, redundancy: int | None = None, pairs: Pairing = "all",
                degenerate: DegeneratePolicy = "skip") -> ImportReport:
    """Validate ``path`` and insert its pairs in one transaction; see the module docstring."""
    if redundancy is None:
        redundancy = int(db.setting("redundancy"))
    if not isinstance(redundancy, int) or redundancy < 1:
        raise ValueError(f"redundancy={redundancy!r}: expected an integer >= 1")
    parsed, report = read_pairs(path, pairs, degenerate)
    report.redundancy = redundancy
    t = schema.now()
    with db.write() as conn:
        seen = set(conn.execute(select(schema.items.c.pair_key)).scalars())
        rows = []
        for p in parsed:
            if p.key in seen:
                report.duplicates += 1
                continue
            seen.add(p.key)
            rows.append(dict(prompt=json_dumps(p.prompt), response_1=json_dumps(p.first),
                             response_2=json_dumps(p.second), redundancy=redundancy, pair_key=p.key,
                             source=p.source, extra=json_dumps(p.extra), created_at=t))
        if rows:
            conn.execute(insert(schema.items), rows)
        report.added = len(rows)
    return report
