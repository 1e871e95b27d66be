"""Scoring response rows with the LongReward judge: the rows' reader, the scorer call, and the config.

Used by ``alignkit longreward score`` and by the LongReward pipeline's score stage.
"""

from __future__ import annotations

from pydantic import Field

from alignkit.config import StrictModel
from alignkit.judge.client import JudgeConfig
from alignkit.judge.longreward import LongRewardConfig


class LongRewardScoreConfig(StrictModel):
    """``alignkit longreward score``: rows to score, the judge and the scorer settings."""

    input: str
    """Response rows (output of `longreward sample`)."""
    output_file: str
    """Scored rows (JSONL, written atomically)."""
    renamed = {"out": "output_file"}
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    """Which judge answers, and how it is called; judge.cache null = OUTPUT_FILE.judge_cache.sqlite."""
    scorer: LongRewardConfig = Field(default_factory=LongRewardConfig)
    """LongReward scorer settings (chunk sizes, top_k, attempts, ...)."""

    cli_aliases = {"--in": "input", "--judge": "judge.spec", "--cache": "judge.cache",
                   "--concurrency": "judge.concurrency"}


def read_response_rows(path: str) -> list[dict]:
    """Rows to score: id, prompt_id, context, query, response (strings; the response may be empty)."""
    from alignkit.errors import DataError
    from alignkit.generate.jsonl import read_jsonl, require_str

    out, seen = [], {}
    for line, row in read_jsonl(path):
        where = f"{path}:{line}"
        for key in ("context", "query"):
            require_str(row, key, where)
        require_str(row, "response", where, allow_empty=True)
        for key in ("id", "prompt_id"):
            value = row.get(key)
            if isinstance(value, bool) or not isinstance(value, str | int):
                raise DataError(f"{where}: field '{key}': expected a string or an integer")
        rid = str(row["id"])
        if rid in seen:
            raise DataError(f"{where}: field 'id': duplicate id {rid!r} (first on line {seen[rid]})")
        seen[rid] = line
        out.append(row)
    return out


def score_rows(rows: list[dict], judge, scorer_cfg, progress: bool = True) -> list[dict]:
    """Score response rows; each output row is the input row plus the scorer's fields."""
    from alignkit.judge.longreward import LongRewardScorer, ScoreItem

    items = [
        ScoreItem(str(r["id"]), str(r["prompt_id"]), r["context"], r["query"], r["response"]) for r in rows
    ]
    results = LongRewardScorer(judge, scorer_cfg).score(items, progress=progress)
    return [
        {**row, **{k: v for k, v in res.items() if k not in ("id", "prompt_id")}}
        for row, res in zip(rows, results, strict=True)
    ]
