"""``alignkit longreward sample | score | pairs``: the LongReward stages on your own data.

sample: prompt rows (context, query) -> K responses per prompt (JSONL, one row per response)
score:  response rows -> four judge scores, reward, rationales, failures (JSONL), via any judge
pairs:  scored rows -> TRL preference rows (+ K-way rows with rewards for EXO)
"""

from __future__ import annotations

import argparse


def _cmd_sample(args: argparse.Namespace) -> int:
    from rich.console import Console

    from alignkit.cli import UserError
    from alignkit.generate.engine import GenerationError, SamplingParams, make_engine
    from alignkit.generate.jsonl import RecordError, write_jsonl_atomic
    from alignkit.judge.sampling import read_prompt_rows, sample_responses
    from alignkit.models import ModelError

    try:
        rows = read_prompt_rows(args.data)
    except RecordError as exc:
        raise UserError(str(exc)) from None
    params = SamplingParams(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p
    )
    if args.temperature == 0.0 and args.k > 1:
        raise UserError("--k > 1 needs --temperature > 0 (greedy would give K identical responses)")
    kw = {"dtype": args.dtype, "batch_size": args.batch_size}
    if args.device:
        kw["device"] = args.device
    try:
        engine = make_engine(args.model, backend=args.backend, **kw)
        out = sample_responses(engine, rows, args.k, params, seed=args.seed)
    except (GenerationError, ModelError) as exc:
        raise UserError(f"{args.data}: {exc}") from None
    n = write_jsonl_atomic(args.out, out)
    Console(stderr=True).print(f"wrote {n} responses ({len(rows)} prompts x {args.k}) to {args.out}")
    return 0


def _score_config_cls():
    # built on demand: the cli module stays import-light for `alignkit --help`
    from pydantic import Field

    from alignkit.config import StrictModel
    from alignkit.judge.client import JudgeConfig
    from alignkit.judge.longreward import LongRewardConfig

    class LongRewardScoreConfig(StrictModel):
        """``alignkit longreward score --config FILE``: the judge and the scorer settings."""

        judge: JudgeConfig = Field(default_factory=JudgeConfig)
        scorer: LongRewardConfig = Field(default_factory=LongRewardConfig)

    return LongRewardScoreConfig


def read_response_rows(path: str) -> list[dict]:
    """Rows to score: id, prompt_id, context, query, response (strings; the response may be empty)."""
    from alignkit.generate.jsonl import RecordError, read_jsonl, require_str

    out, seen = [], {}
    for line, row in read_jsonl(path):
        where = f"{path}:{line}"
        for key in ("context", "query"):
            require_str(row, key, where)
        require_str(row, "response", where, allow_empty=True)
        for key in ("id", "prompt_id"):
            value = row.get(key)
            if isinstance(value, bool) or not isinstance(value, str | int):
                raise RecordError(f"{where}: field '{key}': expected a string or an integer")
        rid = str(row["id"])
        if rid in seen:
            raise RecordError(f"{where}: field 'id': duplicate id {rid!r} (first on line {seen[rid]})")
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


def _cmd_score(args: argparse.Namespace) -> int:
    import json

    from rich.console import Console

    from alignkit.cli import UserError
    from alignkit.config import load_config
    from alignkit.generate.engine import GenerationError
    from alignkit.generate.jsonl import RecordError, write_jsonl_atomic
    from alignkit.judge.client import judge_from_config
    from alignkit.models import ModelError

    overrides = list(args.overrides)
    if args.judge:
        overrides.append(f"judge.spec={args.judge}")
    if args.concurrency:
        overrides.append(f"judge.concurrency={args.concurrency}")
    cfg = load_config(_score_config_cls(), args.config, overrides)
    try:
        rows = read_response_rows(args.inp)
    except RecordError as exc:
        raise UserError(str(exc)) from None
    cache = args.cache or cfg.judge.cache or f"{args.out}.judge_cache.sqlite"
    console = Console(stderr=True)
    try:
        judge = judge_from_config(cfg.judge, cache_path=cache)
    except (ValueError, GenerationError, ModelError) as exc:
        raise UserError(f"judge: {exc}") from None
    console.print(f"scoring {len(rows)} responses with {judge.model_id} (cache: {cache})")
    try:
        scored = score_rows(rows, judge, cfg.scorer)
    finally:
        usage = judge.usage.as_dict()
        judge.close()
    write_jsonl_atomic(args.out, scored)
    ok = sum(r["status"] == "scored" for r in scored)
    console.print(f"wrote {len(scored)} rows to {args.out}: {ok} scored, {len(scored) - ok} failed")
    console.print("judge usage: " + json.dumps(usage))
    return 0


def _cmd_pairs(args: argparse.Namespace) -> int:
    import json

    from rich.console import Console

    from alignkit.cli import UserError
    from alignkit.generate.jsonl import RecordError, read_jsonl, write_jsonl_atomic
    from alignkit.judge.pairs import build_pairs

    try:
        rows = []
        for line, row in read_jsonl(args.inp):
            for key in ("id", "prompt_id", "prompt", "response", "status"):
                if key not in row:
                    raise RecordError(
                        f"{args.inp}:{line}: field '{key}': missing (is this `longreward score` output?)"
                    )
            if row["status"] == "scored" and not isinstance(row.get("reward"), int | float):
                raise RecordError(f"{args.inp}:{line}: field 'reward': a scored row needs a numeric reward")
            rows.append(row)
        pairs, kway, stats = build_pairs(rows, min_scored=args.min_scored, prompt_format=args.prompt_format)
    except (RecordError, ValueError) as exc:
        raise UserError(str(exc)) from None
    write_jsonl_atomic(args.out, pairs)
    if args.kway_out:
        write_jsonl_atomic(args.kway_out, kway)
    console = Console(stderr=True)
    console.print(
        f"wrote {len(pairs)} pairs to {args.out}"
        + (f" and {len(kway)} K-way rows to {args.kway_out}" if args.kway_out else "")
    )
    console.print("pair statistics: " + json.dumps(stats.as_dict()))
    return 0


def register(sub) -> None:
    from alignkit.models import DEFAULT_MODEL

    lr = sub.add_parser("longreward", help="LongReward stages: sample K responses, score them, build pairs")
    lsub = lr.add_subparsers(dest="longreward_command", metavar="STAGE", required=True)

    p = lsub.add_parser("sample", help="sample K responses per (context, query) prompt row")
    p.add_argument("--model", default=DEFAULT_MODEL, help="policy model (default: the embedded model)")
    p.add_argument(
        "--data", required=True, help="JSONL rows with 'context' and 'query' (optional 'id', 'prompt')"
    )
    p.add_argument("--out", required=True)
    p.add_argument("--k", type=int, default=10, help="responses per prompt (official example: 10)")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--seed", type=int, default=0, help="prompt row i is sampled with seed SEED+i")
    p.add_argument("--backend", choices=["auto", "hf", "vllm"], default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--device", default=None)
    p.add_argument("--batch-size", type=int, default=8)
    p.set_defaults(func=_cmd_sample)

    s = lsub.add_parser(
        "score",
        help="score responses on helpfulness, logicality, faithfulness, completeness with a judge",
        description="Config file sections: judge (spec, cache, concurrency, retries, timeout, api_key_env) and "
        "scorer (chunk sizes, top_k, language, max_tokens, attempts, no_statements). Calls are cached in SQLite "
        "so a rerun after a crash repeats no answered call.",
    )
    s.add_argument("--in", dest="inp", required=True, help="response rows (output of `longreward sample`)")
    s.add_argument("--out", required=True)
    s.add_argument(
        "--judge", default=None, help="local:<model> or openai:<base_url>#<model> (overrides judge.spec)"
    )
    s.add_argument(
        "--cache", default=None, help="SQLite call cache (default: judge.cache, else OUT.judge_cache.sqlite)"
    )
    s.add_argument(
        "--concurrency", type=int, default=None, help="judge calls in flight (overrides judge.concurrency)"
    )
    s.add_argument("--config", default=None, help="YAML with 'judge' and 'scorer' sections")
    s.add_argument("overrides", nargs="*", help="dotted overrides, e.g. scorer.top_k=3 judge.timeout=30")
    s.set_defaults(func=_cmd_score)

    q = lsub.add_parser(
        "pairs", help="best-vs-worst preference pairs (+ K-way reward rows) from scored responses"
    )
    q.add_argument("--in", dest="inp", required=True, help="scored rows (output of `longreward score`)")
    q.add_argument("--out", required=True, help="pair rows {prompt, chosen, rejected}")
    q.add_argument("--kway-out", default=None, help="also write K-way rows {prompt, completions, rewards}")
    q.add_argument(
        "--min-scored", type=int, default=5, help="skip prompts with fewer scored responses (default 5)"
    )
    q.add_argument("--prompt-format", choices=["messages", "string"], default="messages")
    q.set_defaults(func=_cmd_pairs)
