"""``alignkit longreward sample | score | pairs``: the LongReward stages on your own data.

sample: prompt rows (context, query) -> K responses per prompt (JSONL, one row per response)
score:  response rows -> four judge scores, reward, rationales, failures (JSONL), via any judge
pairs:  scored rows -> TRL preference rows (+ K-way rows with rewards for EXO)
"""

from __future__ import annotations

from typing import Literal

from alignkit.commands import Command, Group
from alignkit.config import StrictModel
from alignkit.generate.options import EngineOptions


class SampleConfig(EngineOptions):
    """``alignkit longreward sample``: K responses per (context, query) prompt row."""

    data: str
    """JSONL rows with 'context' and 'query' (optional 'id', 'prompt')."""
    output_file: str
    """Response rows (JSONL, one row per response)."""
    renamed = {"out": "output_file"}
    k: int = 10
    """Responses per prompt (official example: 10)."""
    temperature: float = 0.8
    """Sampling temperature (> 0 when k > 1)."""
    top_p: float = 0.95
    """Nucleus sampling mass."""
    max_new_tokens: int = 512
    """Most tokens per response."""
    seed: int = 0
    """Prompt row i is sampled with seed SEED+i."""


class PairsConfig(StrictModel):
    """``alignkit longreward pairs``: preference pairs from scored responses."""

    input: str
    """Scored rows (output of `longreward score`)."""
    output_file: str
    """Pair rows {prompt, chosen, rejected}."""
    renamed = {"out": "output_file"}
    kway_out: str | None = None
    """Also write K-way rows {prompt, completions, rewards}."""
    min_scored: int = 5
    """Skip prompts with fewer scored responses."""
    prompt_format: Literal["messages", "string"] = "messages"
    """Prompt of the pair rows: chat messages or a plain string."""

    cli_aliases = {"--in": "input"}


def sample(cfg: SampleConfig) -> int:
    from rich.console import Console

    from alignkit.errors import UserError
    from alignkit.generate.engine import GenerationError, SamplingParams
    from alignkit.generate.jsonl import write_jsonl_atomic
    from alignkit.generate.options import engine_from_options
    from alignkit.judge.sampling import read_prompt_rows, sample_responses
    from alignkit.models import ModelError

    rows = read_prompt_rows(cfg.data)
    params = SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p)
    if cfg.temperature == 0.0 and cfg.k > 1:
        raise UserError("--k > 1 needs --temperature > 0 (greedy would give K identical responses)")
    try:
        out = sample_responses(engine_from_options(cfg), rows, cfg.k, params, seed=cfg.seed)
    except (GenerationError, ModelError) as exc:
        raise UserError(f"{cfg.data}: {exc}") from None
    n = write_jsonl_atomic(cfg.output_file, out)
    Console(stderr=True).print(f"wrote {n} responses ({len(rows)} prompts x {cfg.k}) to {cfg.output_file}")
    return 0


def score(cfg) -> int:
    import json

    from rich.console import Console

    from alignkit.errors import UserError
    from alignkit.generate.engine import GenerationError
    from alignkit.generate.jsonl import write_jsonl_atomic
    from alignkit.judge.client import judge_cache_file, judge_from_config
    from alignkit.judge.scoring import read_response_rows, score_rows
    from alignkit.models import ModelError

    rows = read_response_rows(cfg.input)
    default_cache = f"{cfg.output_file}.judge_cache.sqlite"  # what judge.cache: true means here
    cache = judge_cache_file(cfg.judge, default_cache) or "none (judge.cache: false)"
    console = Console(stderr=True)
    try:
        judge = judge_from_config(cfg.judge, cache_path=default_cache)
    except (ValueError, GenerationError, ModelError) as exc:
        raise UserError(f"judge: {exc}") from None
    console.print(f"scoring {len(rows)} responses with {judge.model_id} (cache: {cache})")
    try:
        scored = score_rows(rows, judge, cfg.scorer)
    finally:
        usage = judge.usage.as_dict()
        judge.close()
    write_jsonl_atomic(cfg.output_file, scored)
    ok = sum(r["status"] == "scored" for r in scored)
    console.print(f"wrote {len(scored)} rows to {cfg.output_file}: {ok} scored, {len(scored) - ok} failed")
    console.print("judge usage: " + json.dumps(usage))
    return 0


def make_pairs(cfg: PairsConfig) -> int:
    import json

    from rich.console import Console

    from alignkit.errors import DataError, UserError
    from alignkit.generate.jsonl import read_jsonl, write_jsonl_atomic
    from alignkit.judge.pairs import build_pairs

    rows = []
    for line, row in read_jsonl(cfg.input):
        for key in ("id", "prompt_id", "prompt", "response", "status"):
            if key not in row:
                raise DataError(f"{cfg.input}:{line}: field '{key}': missing (is this `longreward score` output?)")
        if row["status"] == "scored" and not isinstance(row.get("reward"), int | float):
            raise DataError(f"{cfg.input}:{line}: field 'reward': a scored row needs a numeric reward")
        rows.append(row)
    try:
        pairs, kway, stats = build_pairs(rows, min_scored=cfg.min_scored, prompt_format=cfg.prompt_format)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    write_jsonl_atomic(cfg.output_file, pairs)
    if cfg.kway_out:
        write_jsonl_atomic(cfg.kway_out, kway)
    console = Console(stderr=True)
    console.print(
        f"wrote {len(pairs)} pairs to {cfg.output_file}"
        + (f" and {len(kway)} K-way rows to {cfg.kway_out}" if cfg.kway_out else "")
    )
    console.print("pair statistics: " + json.dumps(stats.as_dict()))
    return 0


COMMANDS = [
    Group("longreward", "LongReward stages: sample K responses, score them, build pairs"),
    Command("longreward sample", "sample K responses per (context, query) prompt row",
            "alignkit.judge.cli:SampleConfig", "alignkit.judge.cli:sample", save_to="output_file"),
    Command("longreward score", "score responses on helpfulness, logicality, faithfulness, completeness with a judge",
            "alignkit.judge.scoring:LongRewardScoreConfig", "alignkit.judge.cli:score", save_to="output_file",
            description="Config sections: judge (spec, cache, concurrency, retries, timeout, api_key_env) and scorer "
            "(chunk sizes, top_k, language, max_tokens, attempts, no_statements). Calls are cached in SQLite so a "
            "rerun after a crash repeats no answered call."),
    Command("longreward pairs", "best-vs-worst preference pairs (+ K-way reward rows) from scored responses",
            "alignkit.judge.cli:PairsConfig", "alignkit.judge.cli:make_pairs", save_to="output_file"),
]
