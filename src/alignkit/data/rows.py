"""Row schemas, reading and validation.

Rows follow TRL's column conventions so existing datasets work unchanged:

* **sft**: ``{"messages": [...]}`` or ``{"prompt": ..., "completion": ...}``
* **preference**: ``{"prompt": ..., "chosen": ..., "rejected": ...}`` (explicit prompt), or
  ``{"chosen": [...messages], "rejected": [...messages]}`` (implicit prompt: the shared leading
  messages are the prompt)
* **kway** (EXO / DPO-rw): ``{"prompt": ..., "completions": [K], "rewards": [K]}``
* **unpaired** (binary correctness, multi-task RM): ``{"prompt": ..., "completion": ..., "label": bool}``
* **stepwise** (process reward models): ``{"prompt": ..., "completions": [steps], "labels": [S]}``, each
  label a bool or a soft label in [0, 1] (Monte-Carlo estimates); steps are non-empty strings

Each text field is either a plain string ("plain" rows, no chat template) or a list of chat
messages ``{"role": ..., "content": ...}`` ("conversational" rows, rendered with the model's chat
template). All rows of one file must share one style. A conversational row may declare ``tools``
(OpenAI function declarations) that its assistant ``tool_calls`` must name. Every problem is reported as
``file:line: field 'x': what is wrong`` and nothing is returned for a file with any bad row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from alignkit.data.records import (
    Messages,
    check_messages,
    check_text,
    check_tool_use,
    check_tools,
    iter_records,
    require,
)
from alignkit.errors import DataError

Text = str | Messages
RowKind = Literal["sft", "preference", "kway", "unpaired", "stepwise"]


@dataclass
class Example:
    """One validated row in canonical form (prompt and completions kept in their original style)."""

    index: int  # position in the source file (0-based), for error messages and caches
    prompt: Text
    completions: list[Text]  # sft: [completion]; preference: [chosen, rejected]; kway: K items
    rewards: list[float] | None = None
    conversational: bool = False
    labels: list[float] | None = None  # unpaired: [1.0/0.0]; stepwise: one per step (soft labels in [0, 1])
    meta: dict[str, Any] = field(default_factory=dict)
    tools: list[dict[str, Any]] | None = None  # the row's declared functions (OpenAI format), if any


def _split_implicit_prompt(chosen: Messages, rejected: Messages, where: str) -> tuple[Messages, Messages, Messages]:
    """Implicit-prompt rows: the longest shared leading run of messages is the prompt."""
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    while n > 0 and chosen[n - 1]["role"] == "assistant":  # the prompt must end on a non-assistant turn
        n -= 1
    if n == 0:
        raise DataError(f"{where}: field 'chosen': implicit prompt: chosen and rejected share no leading messages")
    return chosen[:n], chosen[n:], rejected[n:]


def parse_row(row: Any, kind: RowKind, where: str, index: int) -> Example:
    """Validate one decoded row of ``kind`` and return it in canonical form.

    A conversational row may declare ``tools`` (OpenAI format); its messages' tool calls and tool
    results are checked against them (:func:`~alignkit.data.records.check_tool_use`)."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    ex = _parse_kind(row, kind, where, index)
    if "tools" in row:
        if not ex.conversational:
            raise DataError(f"{where}: field 'tools': needs message lists (plain-string rows cannot call tools)")
        ex.tools = check_tools(row["tools"], where)
    if ex.conversational:
        for j, completion in enumerate(ex.completions):
            check_tool_use(list(ex.prompt) + list(completion), ex.tools, where,
                           _message_fields(row, kind, j, len(ex.prompt), len(completion)))
    return ex


def _message_fields(row: dict, kind: RowKind, j: int, n_prompt: int, n_completion: int) -> list[str]:
    """The field of each message of prompt + completion ``j``, for error messages."""
    if kind == "sft" and "messages" in row:
        return [f"messages[{i}]" for i in range(n_prompt + n_completion)]
    name = {"preference": ("chosen", "rejected")[min(j, 1)], "kway": f"completions[{j}]"}.get(kind, "completion")
    return [f"prompt[{i}]" for i in range(n_prompt)] + [f"{name}[{i}]" for i in range(n_completion)]


def _parse_kind(row: dict, kind: RowKind, where: str, index: int) -> Example:
    meta = {k: v for k, v in row.items() if k not in {"prompt", "chosen", "rejected", "completion", "tools",
                                                        "completions", "rewards", "messages", "label", "labels"}}
    if kind == "sft":
        if "messages" in row:
            msgs = check_messages(row["messages"], where, "messages")
            if msgs[-1]["role"] != "assistant":
                raise DataError(f"{where}: field 'messages': the last message must be from the assistant")
            # the completion starts at the first assistant turn: every assistant turn can be trained on
            # (``data.train_on``); the turns between them are context (tokenize.py masks them)
            k = next((i for i, m in enumerate(msgs) if i > 0 and m["role"] == "assistant"), 0)
            if k == 0:
                raise DataError(f"{where}: field 'messages': needs a message before the assistant's")
            return Example(index, msgs[:k], [msgs[k:]], conversational=True, meta=meta)
        prompt = check_text(require(row, "prompt", where), where, "prompt")
        completion = check_text(require(row, "completion", where), where, "completion")
        return Example(index, prompt, [completion], conversational=_style(where, prompt, [completion]), meta=meta)
    if kind == "preference":
        chosen = check_text(require(row, "chosen", where), where, "chosen")
        rejected = check_text(require(row, "rejected", where), where, "rejected")
        if "prompt" in row:
            prompt = check_text(row["prompt"], where, "prompt")
        elif isinstance(chosen, list) and isinstance(rejected, list):
            prompt, chosen, rejected = _split_implicit_prompt(chosen, rejected, where)
        else:
            raise DataError(f"{where}: field 'prompt': missing (required unless chosen/rejected are message lists)")
        return Example(index, prompt, [chosen, rejected], conversational=_style(where, prompt, [chosen, rejected]),
                       meta=meta)
    if kind == "kway":
        prompt = check_text(require(row, "prompt", where), where, "prompt")
        comps = require(row, "completions", where)
        rewards = require(row, "rewards", where)
        if not isinstance(comps, list) or len(comps) < 2:
            raise DataError(f"{where}: field 'completions': expected a list of at least 2 completions")
        if not isinstance(rewards, list) or len(rewards) != len(comps):
            raise DataError(f"{where}: field 'rewards': expected a list of {len(comps)} numbers (one per completion)")
        clean = []
        for j, r in enumerate(rewards):
            if isinstance(r, bool) or not isinstance(r, int | float) or not math.isfinite(r):
                raise DataError(f"{where}: field 'rewards[{j}]': expected a finite number, got {r!r}")
            clean.append(float(r))
        texts = [check_text(c, where, f"completions[{j}]") for j, c in enumerate(comps)]
        return Example(index, prompt, texts, rewards=clean, conversational=_style(where, prompt, texts), meta=meta)
    if kind == "unpaired":
        prompt = check_text(require(row, "prompt", where), where, "prompt")
        completion = check_text(require(row, "completion", where), where, "completion")
        label = require(row, "label", where)
        if not isinstance(label, bool):
            raise DataError(f"{where}: field 'label': expected true or false, got {label!r}")
        return Example(index, prompt, [completion], conversational=_style(where, prompt, [completion]),
                       labels=[float(label)], meta=meta)
    if kind == "stepwise":
        return _parse_stepwise(row, where, index, meta)
    raise ValueError(f"unknown row kind {kind!r}")


def _parse_stepwise(row: dict, where: str, index: int, meta: dict) -> Example:
    prompt = require(row, "prompt", where)
    if not isinstance(prompt, str) or not prompt.strip():
        raise DataError(f"{where}: field 'prompt': expected a non-empty string")
    steps = check_steps(require(row, "completions", where), where)
    labels = check_step_labels(require(row, "labels", where), len(steps), where)
    return Example(index, prompt, steps, labels=labels, meta=meta)


def check_steps(steps: Any, where: str) -> list[str]:
    """A stepwise row's ``completions``: a non-empty list of non-empty step strings."""
    if not isinstance(steps, list) or not steps:
        raise DataError(f"{where}: field 'completions': expected a non-empty list of steps")
    for j, s in enumerate(steps):
        if not isinstance(s, str) or not s.strip():
            raise DataError(f"{where}: field 'completions[{j}]': expected a non-empty step string, got {s!r}")
    return list(steps)


def check_step_labels(labels: Any, n_steps: int, where: str) -> list[float]:
    """A stepwise row's ``labels``: one bool or number in [0, 1] per step, as floats."""
    if not isinstance(labels, list) or len(labels) != n_steps:
        got = len(labels) if isinstance(labels, list) else type(labels).__name__
        raise DataError(f"{where}: field 'labels': expected {n_steps} labels (one per step), got {got}")
    clean = []
    for j, x in enumerate(labels):
        ok = isinstance(x, bool) or (isinstance(x, int | float) and math.isfinite(x) and 0 <= x <= 1)
        if not ok:
            raise DataError(f"{where}: field 'labels[{j}]': expected true/false or a number in [0, 1], got {x!r}")
        clean.append(float(x))
    return clean


def _style(where: str, prompt: Text, completions: list[Text]) -> bool:
    kinds = {isinstance(prompt, list)} | {isinstance(c, list) for c in completions}
    if len(kinds) > 1:
        raise DataError(f"{where}: mixes plain strings and message lists; use one style per row")
    return kinds.pop()


def read_rows(path: str | Path, kind: RowKind) -> list[Example]:
    """Read and validate every row of ``path``; any bad row raises :class:`DataError`."""
    path = Path(path)
    out: list[Example] = []
    styles: set[bool] = set()
    for n, rec in enumerate(iter_records(path)):
        where = rec.where
        ex = parse_row(rec.value, kind, where, n)
        styles.add(ex.conversational)
        if len(styles) > 1:
            raise DataError(f"{where}: row style differs from earlier rows (plain strings vs message lists)")
        out.append(ex)
    if not out:
        raise DataError(f"{path}: no rows")
    return out


def text_of(value: Text) -> str:
    """The plain content of a text field (concatenated message contents for conversations)."""
    if isinstance(value, str):
        return value
    return "".join(m["content"] for m in value)
