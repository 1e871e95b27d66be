"""``alignkit eval ifeval``: IFEval by the official protocol (METHODS §12.1).

Rows with a ``response`` are scored as given (the reference's ``input_response_data`` mode); the others
are answered by ``model`` through the shared generation engine, greedily, one user turn rendered with
the chat template, ``max_new_tokens`` 1280 and no stop strings (lm-eval's ``ifeval`` task).
Writes ``results.json`` (the four official accuracies at the top level, Wilson intervals, per group
and per instruction id, the comparable-score signature) and ``scored.jsonl`` (one row per prompt).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from alignkit.config import StrictModel, dump_config
from alignkit.models import DEFAULT_MODEL

PROTOCOL = {"name": "ifeval", "version": 1,
            "strict": "response.strip() and check(response)",
            "loose": "any of 8 variants: response, '*' removed, first/last/both lines removed, and those without '*'",
            "kwargs": "None values dropped"}
RESULTS_FORMAT = "alignkit-ifeval-results/1"


class IfEvalConfig(StrictModel):
    """``alignkit eval ifeval --data FILE [--model M]``."""

    cli_aliases = {"-o": "output_dir"}

    data: str
    """IFEval rows (JSONL, JSON or Parquet): key, prompt, instruction_id_list, kwargs, optional response."""
    model: str = DEFAULT_MODEL
    """Answers the rows without a 'response' (embedded name, HF dir or hub id)."""
    apply_chat_template: bool = True
    """Render each prompt as one user turn with the model's chat template (lm-eval --apply_chat_template)."""
    max_new_tokens: int = Field(default=1280, ge=1)
    """Answer budget (lm-eval's ifeval max_gen_toks: 1280); decoding is greedy with no stop strings."""
    batch_size: int = Field(default=8, ge=1)
    """Prompts per generation batch."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weights dtype of the answering model; auto: bfloat16 where the device multiplies it natively, else float32."""
    device: str | None = None
    """cpu | cuda (null: the engine's default)."""
    backend: Literal["auto", "hf", "vllm"] = "auto"
    """Generation backend."""
    limit: int | None = Field(default=None, ge=1)
    """Evaluate the first N rows only."""
    output_dir: str = "runs/eval/ifeval"
    """results.json, scored.jsonl and config.yaml go here."""


def read_rows(path: str, limit: int | None = None):
    """Validated rows (``DataError`` naming file:line:field for a bad row or instruction argument)."""
    from alignkit.data.records import read_objects
    from alignkit.errors import DataError
    from alignkit.evals.ifeval.scoring import parse_row

    rows, seen = [], {}
    for rec in read_objects(path):
        row = parse_row(rec.value, rec.where)
        if row.key in seen:
            raise DataError(f"{rec.where}: field 'key': duplicate key {row.key!r} (first at {seen[row.key]})")
        seen[row.key] = rec.where
        rows.append(row)
    return rows[:limit] if limit else rows


def _decoding(cfg: IfEvalConfig) -> dict[str, Any]:
    return {"strategy": "greedy", "temperature": 0.0, "max_new_tokens": cfg.max_new_tokens,
            "min_new_tokens": 0, "stop_strings": []}


def answer(cfg: IfEvalConfig, rows: list, engine: Any = None, progress: bool = True) -> tuple[list[str], dict]:
    """Every row's response (given or generated) and the generation record (empty when none was needed)."""
    todo = [i for i, r in enumerate(rows) if r.response is None]
    responses = [r.response for r in rows]
    if not todo:
        return responses, {}
    from alignkit.evals.runner import subject_components
    from alignkit.generate.engine import SamplingParams, make_engine
    from alignkit.precision import resolve_dtype

    dtype = resolve_dtype(cfg.dtype, cfg.device)
    if engine is None:
        kw: dict[str, Any] = {"dtype": dtype, "batch_size": cfg.batch_size}
        if cfg.device:
            kw["device"] = cfg.device
        engine = make_engine(cfg.model, backend=cfg.backend, **kw)
    params = SamplingParams(max_new_tokens=cfg.max_new_tokens)
    results = engine.generate([rows[i].prompt for i in todo], params,
                              apply_chat_template=cfg.apply_chat_template, progress=progress)
    finish: dict[str, int] = {}
    for i, res in zip(todo, results, strict=True):
        c = res.completions[0]
        responses[i] = c.text
        finish[c.finish_reason] = finish.get(c.finish_reason, 0) + 1
    record = {
        "subject": subject_components(cfg.model, engine, dtype),
        "decoding": _decoding(cfg),
        "backend": type(engine).__name__,
        "dtype": dtype,
        "dtype_requested": cfg.dtype,
        "device": cfg.device,
        "batch_size": cfg.batch_size,
        "apply_chat_template": cfg.apply_chat_template,
        "generated": len(todo),
        "finish_reasons": finish,
    }
    return responses, record


def signature(rows: list, responses: list[str], generation: dict) -> Any:
    """The comparable-score signature. Settings: checker version and text analyses, protocol, the data
    (prompts, instructions, arguments) and, for generated answers, the chat policy and decoding. Subject:
    the answering model, tokenizer and chat template, and a hash of the responses given in the file."""
    from alignkit.evals.ifeval import text
    from alignkit.evals.ifeval.checkers import CHECKER_VERSION
    from alignkit.evals.signature import Signature
    from alignkit.fingerprints import dataset_hash, sha256_hex

    items = [{"key": r.key, "prompt": r.prompt, "instruction_id_list": r.instruction_id_list, "kwargs": r.kwargs}
             for r in rows]
    given = [{"key": r.key, "response": r.response} for r in rows if r.response is not None]
    comps: dict[str, Any] = {
        "metric": {"name": "ifeval", "version": 1, "checker": CHECKER_VERSION, **text.identity()},
        "task": {"name": "ifeval", "n_given_responses": len(given)},
        "dataset": {"sha256": dataset_hash(items), "n": len(rows)},
        "protocol": dict(PROTOCOL),
    }
    given_sha = sha256_hex(given) if given else None
    if not generation:
        comps["model"] = {"name": "responses given in the data", "sha256": given_sha, "dtype": None}
        return Signature(comps)
    comps["chat_policy"] = {"apply_chat_template": generation["apply_chat_template"]}
    comps["decoding"] = {**generation["decoding"], "backend": generation["backend"]}
    subject = generation["subject"]
    comps["model"] = {**subject["model"], "given_responses_sha256": given_sha}
    comps["tokenizer"] = subject["tokenizer"]
    comps["chat_template"] = subject["chat_template"] if generation["apply_chat_template"] else {"sha256": None}
    return Signature(comps)


def run_ifeval(cfg: IfEvalConfig, engine: Any = None, progress: bool = True) -> dict[str, Any]:
    """Read, answer where needed, score, and write ``results.json`` and ``scored.jsonl``."""
    from alignkit.atomic import write_jsonl_atomic
    from alignkit.evals.ifeval.scoring import score_row, summarise
    from alignkit.evals.report import atomic_write

    rows = read_rows(cfg.data, cfg.limit)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, out / "config.yaml")
    responses, generation = answer(cfg, rows, engine, progress)
    scored = [score_row(r, resp) for r, resp in zip(rows, responses, strict=True)]
    write_jsonl_atomic(out / "scored.jsonl", scored)
    results = {
        **summarise(scored),
        "format": RESULTS_FORMAT,
        "data": cfg.data,
        "generation": {k: v for k, v in generation.items() if k != "subject"} or None,
        "signature": signature(rows, responses, generation).to_dict(),
    }
    atomic_write(out / "results.json", json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    return results
