"""Sampling the K candidate responses that LongReward scores (METHODS §1.6 step 1).

Input rows: ``{"context": str, "query": str}`` plus an optional ``"id"`` (default: the 0-based row
number). The policy sees the context and the question as ONE user message, rendered from
``prompts/longreward_policy.<lang>.txt`` (language by the §1.5(d) rule on the query) unless the row
carries its own ``"prompt"``. Output: one row per response,
``{"id": "<prompt_id>-<k>", "prompt_id", "k", "context", "query", "prompt", "response", "finish_reason"}``
(the official ``"{idx}-{k}"`` ids). Sampling is seeded per prompt (seed + row number) so a rerun
reproduces the same candidates.
"""

from __future__ import annotations

from typing import Any

from alignkit.errors import DataError
from alignkit.generate.engine import SamplingParams
from alignkit.generate.jsonl import check_prompt, read_jsonl, require_str
from alignkit.judge.longreward import detect_language
from alignkit.judge.prompts import fill, load_prompt


def policy_prompt(context: str, query: str) -> list[dict[str, str]]:
    """The chat prompt the policy answers: context + question in one user message."""
    text = fill(load_prompt("longreward_policy", detect_language(query)), context=context, query=query)
    return [{"role": "user", "content": text}]


def read_prompt_rows(path: str) -> list[dict[str, Any]]:
    """Validated prompt rows with ``prompt_id`` and ``prompt`` filled in; errors name file:line:field."""
    out, seen = [], {}
    for n, (line, row) in enumerate(read_jsonl(path)):
        where = f"{path}:{line}"
        context = require_str(row, "context", where)
        query = require_str(row, "query", where)
        pid = row.get("id", n)
        if not isinstance(pid, str | int) or isinstance(pid, bool):
            raise DataError(f"{where}: field 'id': expected a string or an integer")
        pid = str(pid)
        if pid in seen:
            raise DataError(f"{where}: field 'id': duplicate id {pid!r} (first on line {seen[pid]})")
        seen[pid] = line
        prompt = check_prompt(row["prompt"], where) if "prompt" in row else policy_prompt(context, query)
        if not isinstance(prompt, list) or len(prompt) != 1 or prompt[0]["role"] != "user":
            raise DataError(
                f"{where}: field 'prompt': must be one user message holding the context and question"
            )
        out.append({**row, "prompt_id": pid, "context": context, "query": query, "prompt": prompt})
    return out


def sample_responses(
    engine, rows: list[dict[str, Any]], k: int, params: SamplingParams, seed: int = 0, progress: bool = True
) -> list[dict[str, Any]]:
    """K responses per prompt row (``params.n`` is replaced by ``k``)."""
    from dataclasses import replace

    params = replace(params, n=k)
    results = engine.generate(
        [r["prompt"] for r in rows], params, progress=progress, seeds=[seed + i for i in range(len(rows))]
    )
    out = []
    for row, res in zip(rows, results, strict=True):
        base = {key: v for key, v in row.items() if key not in ("id",)}
        for j, c in enumerate(res.completions):
            out.append(
                {
                    "id": f"{row['prompt_id']}-{j}",
                    **base,
                    "k": j,
                    "response": c.text,
                    "finish_reason": c.finish_reason,
                }
            )
    return out
