"""IFEval rows, strict and loose verdicts, and the official metrics.

Strict: an instruction is followed iff ``response.strip()`` is non-empty and its check passes on the
response. Loose: iff the check passes on any non-blank one of 8 variants (the reference's order):
the response; ``*`` removed; first line removed; last line removed; both removed; and the three
line-trimmed variants with ``*`` removed. Prompt level: every instruction of the row followed;
instruction level: followed instructions / all instructions (micro over the rows).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from alignkit.evals.ifeval.checkers import Check, InstructionError, build_check, group_of

METRICS = ("prompt_level_strict_acc", "inst_level_strict_acc", "prompt_level_loose_acc", "inst_level_loose_acc")


@dataclass(frozen=True)
class IfEvalRow:
    """One validated row: the official fields, and its ``response`` when the file gives one."""

    key: Any
    prompt: str
    instruction_id_list: list[str]
    kwargs: list[dict[str, Any]]
    response: str | None = None


def parse_row(value: Any, where: str) -> IfEvalRow:
    """Validate one official-format row; errors name ``where`` and the field (``DataError``)."""
    from alignkit.data.records import require, require_str, require_type
    from alignkit.errors import DataError

    if not isinstance(value, dict):
        raise DataError(f"{where}: expected an object, got {type(value).__name__}")
    key = require(value, "key", where)
    if isinstance(key, bool) or not isinstance(key, int | str):
        raise DataError(f"{where}: field 'key': expected an integer or a string, got {key!r}")
    prompt = require_str(value, "prompt", where)
    ids = require_type(value, "instruction_id_list", where, list, "a list")
    kwargs = require_type(value, "kwargs", where, list, "a list")
    if not ids or not all(isinstance(i, str) for i in ids):
        raise DataError(f"{where}: field 'instruction_id_list': expected a non-empty list of strings")
    if len(kwargs) != len(ids) or not all(isinstance(k, dict) for k in kwargs):
        raise DataError(f"{where}: field 'kwargs': expected one object per instruction ({len(ids)}), got {kwargs!r:.200}")
    response = value.get("response")
    if response is not None and not isinstance(response, str):
        raise DataError(f"{where}: field 'response': expected a string, got {type(response).__name__}")
    row = IfEvalRow(key, prompt, list(ids), [dict(k) for k in kwargs], response)
    try:
        row_checks(row)
    except InstructionError as exc:
        raise DataError(f"{where}: {exc}") from None
    return row


def row_checks(row: IfEvalRow) -> list[Check]:
    """One check per instruction of the row (``InstructionError`` on a bad id or argument)."""
    return [build_check(i, k) for i, k in zip(row.instruction_id_list, row.kwargs, strict=True)]


def loose_variants(response: str) -> list[str]:
    """The 8 responses loose scoring tries, in the reference's order."""
    lines = response.split("\n")
    first = "\n".join(lines[1:]).strip()
    last = "\n".join(lines[:-1]).strip()
    both = "\n".join(lines[1:-1]).strip()
    return [response, response.replace("*", ""), first, last, both,
            first.replace("*", ""), last.replace("*", ""), both.replace("*", "")]


def _follows(check: Check, response: str) -> bool:
    return bool(response.strip()) and bool(check(response))


def follow_strict(checks: Sequence[Check], response: str) -> list[bool]:
    return [_follows(c, response) for c in checks]


def follow_loose(checks: Sequence[Check], response: str) -> list[bool]:
    variants = loose_variants(response)
    return [any(_follows(c, v) for v in variants) for c in checks]


def score_row(row: IfEvalRow, response: str) -> dict[str, Any]:
    """The ``scored.jsonl`` row: the official fields with both verdict lists."""
    checks = row_checks(row)
    return {
        "key": row.key,
        "prompt": row.prompt,
        "response": response,
        "instruction_id_list": row.instruction_id_list,
        "follow_instruction_list_strict": follow_strict(checks, response),
        "follow_instruction_list_loose": follow_loose(checks, response),
    }


def _rate(flags: list[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def _by(scored: list[dict], name: Callable[[str], str]) -> dict[str, dict[str, Any]]:
    acc: dict[str, dict[str, list[bool]]] = {}
    for r in scored:
        for i, iid in enumerate(r["instruction_id_list"]):
            slot = acc.setdefault(name(iid), {"strict": [], "loose": []})
            slot["strict"].append(r["follow_instruction_list_strict"][i])
            slot["loose"].append(r["follow_instruction_list_loose"][i])
    return {k: {"n": len(v["strict"]), "strict_acc": _rate(v["strict"]), "loose_acc": _rate(v["loose"])}
            for k, v in sorted(acc.items())}


def summarise(scored: list[dict[str, Any]]) -> dict[str, Any]:
    """The four official accuracies, Wilson 95% intervals of the prompt-level ones, and per-group /
    per-instruction-id instruction-level accuracies."""
    from alignkit.annotate.agreement import wilson_interval

    strict_prompt = [all(r["follow_instruction_list_strict"]) for r in scored]
    loose_prompt = [all(r["follow_instruction_list_loose"]) for r in scored]
    out: dict[str, Any] = {
        "prompt_level_strict_acc": _rate(strict_prompt),
        "inst_level_strict_acc": _rate([f for r in scored for f in r["follow_instruction_list_strict"]]),
        "prompt_level_loose_acc": _rate(loose_prompt),
        "inst_level_loose_acc": _rate([f for r in scored for f in r["follow_instruction_list_loose"]]),
        "n_prompts": len(scored),
        "n_instructions": sum(len(r["instruction_id_list"]) for r in scored),
    }
    out["intervals"] = {
        "method": "Wilson score interval, 95%, over prompts (binomial)",
        "prompt_level_strict_acc": list(wilson_interval(sum(strict_prompt), len(scored)) or ()),
        "prompt_level_loose_acc": list(wilson_interval(sum(loose_prompt), len(scored)) or ()),
    }
    out["groups"] = _by(scored, group_of)
    out["instructions"] = _by(scored, lambda iid: iid)
    return out
