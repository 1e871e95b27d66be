"""Preference data from a model's own samples, ranked by verifiable-instruction checks.

For each IFEval-format prompt row of :mod:`alignkit.data.verifiable` we sample K responses with the
shared generation engine and verify each. A sample **passes** when the engine reports
``finish_reason == "stop"`` (the model ended its answer within ``max_new_tokens``) **and**
``verify(text, row)`` is true (every instruction followed, IFEval strict): a response cut off by the
token budget never passes, so truncated text is never taught as a good answer.

Outputs, in TRL's conversational conventions (extra keys ``key``, ``instruction_id_list`` and ``kwargs``
ride along as metadata; loaders keep them out of the model input):

* pair rows ``{"prompt": [{"role": "user", ...}], "chosen": [{"role": "assistant", ...}], "rejected": [...]}``
  -- **chosen** is the shortest passing sample (characters; ties -> lowest sample index), which
  favours concise compliance; **rejected** is the failing, non-empty sample whose length is closest
  to the chosen one (ties -> lowest index), so length is not what separates the pair. Prompts whose
  samples all pass or all fail carry no preference and are dropped (counted). Empty samples are
  never used as rejected (an empty completion is a degenerate row for the trainers);
* K-way rows ``{"prompt", "completions": [K x [assistant message]], "rewards": [K x 1.0/0.0]}`` for
  EXO / DPO-rw, kept only when the rewards are not all equal and no sample is empty (so K is the same
  for every row);
* SFT rows ``{"prompt", "completion"}`` (:func:`build_sft`): the shortest passing sample of every
  prompt that has one, for rejection-sampling fine-tuning before preference training;
* :func:`pass_rate` -- the held-out metrics of the demo's before/after table (greedy by default): IFEval
  prompt-/instruction-level strict and loose accuracy with Wilson 95% intervals (the text scored as
  generated, as the official protocol does; truncations are counted beside it).

Run ``alignkit data verifiable-prefs --help`` for the command line (:class:`VerifiablePrefsConfig`);
docs/demo_data.md gives the command that regenerates the shipped files in ``alignkit/data/demo/``.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, model_validator

from alignkit.atomic import write_atomic
from alignkit.config import Precision, StrictModel
from alignkit.data.verifiable import follows, make_splits
from alignkit.generate.engine import SamplingParams
from alignkit.models import DEFAULT_MODEL

# Greedy answers to these prompts are one or two sentences; 64 new tokens leaves room for ~45 words
# while keeping CPU sampling affordable (generation cost grows with every extra step).
DEFAULT_MAX_NEW_TOKENS = 64


def sample_passes(text: str, finish_reason: str, row: Mapping[str, Any]) -> bool:
    """A sample passes when it finished on its own (not cut by the budget) and follows every instruction
    of the IFEval ``row`` (strict)."""
    return finish_reason == "stop" and all(follows(text, row))


def _meta(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in ("key", "instruction_id_list", "kwargs")}


def score_samples(engine, rows: Sequence[Mapping[str, Any]], params: SamplingParams,
                  progress: bool = False) -> list[dict[str, Any]]:
    """Sample ``params.n`` responses per prompt row and verify each.

    Returns one dict per row: ``{"key", "prompt", "instruction_id_list", "kwargs", "samples": [{"text",
    "finish_reason", "follow", "passed", "tokens"}]}`` in input order (``follow``: the strict
    per-instruction verdicts).
    """
    results = engine.generate([r["prompt"] for r in rows], params, progress=progress)
    if len(results) != len(rows):
        raise RuntimeError(f"engine returned {len(results)} results for {len(rows)} prompts")
    scored = []
    for row, res in zip(rows, results, strict=True):
        samples = []
        for c in res.completions:
            follow = follows(c.text, row)
            samples.append({"text": c.text, "finish_reason": c.finish_reason, "follow": follow,
                            "passed": c.finish_reason == "stop" and all(follow), "tokens": len(c.token_ids)})
        scored.append({**_meta(row), "prompt": row["prompt"], "samples": samples})
    return scored


def _user(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


def _assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def choose_pair(samples: Sequence[Mapping[str, Any]]) -> tuple[int, int] | None:
    """Indices ``(chosen, rejected)`` by the module's rule, or None when no valid pair exists."""
    passing = [i for i, s in enumerate(samples) if s["passed"]]
    failing = [i for i, s in enumerate(samples) if not s["passed"] and s["text"].strip()]
    if not passing or not failing:
        return None
    chosen = min(passing, key=lambda i: (len(samples[i]["text"]), i))
    target = len(samples[chosen]["text"])
    rejected = min(failing, key=lambda i: (abs(len(samples[i]["text"]) - target), i))
    return chosen, rejected


def build_sft(scored: Sequence[Mapping[str, Any]]) -> list[dict]:
    """Rejection-sampling SFT rows ``{"prompt", "completion"}``: for every prompt with a passing
    sample, the one :func:`choose_pair` would choose (the shortest passing). Unlike the pairs this
    keeps prompts whose samples all pass."""
    rows = []
    for item in scored:
        passing = [i for i, s in enumerate(item["samples"]) if s["passed"]]
        if not passing:
            continue
        best = min(passing, key=lambda i: (len(item["samples"][i]["text"]), i))
        rows.append({
            "prompt": _user(item["prompt"]),
            "completion": _assistant(item["samples"][best]["text"]),
            **_meta(item),
        })
    return rows


def build_pairs(scored: Sequence[Mapping[str, Any]]) -> tuple[list[dict], list[dict], dict[str, Any]]:
    """``(pair_rows, kway_rows, stats)`` from :func:`score_samples` output.

    ``stats`` counts prompts, samples, pass/truncation rates, and every dropped prompt by reason:
    ``dropped_all_pass``, ``dropped_all_fail``, ``dropped_no_nonempty_rejected`` for pairs;
    ``kway_dropped_equal_rewards``, ``kway_dropped_empty_sample`` for K-way rows.
    """
    pairs: list[dict] = []
    kway: list[dict] = []
    drops: Counter[str] = Counter()
    per_type: dict[str, Counter[str]] = {}
    n_samples = n_passed = n_truncated = 0
    for item in scored:
        samples = item["samples"]
        for j, iid in enumerate(item["instruction_id_list"]):
            t = per_type.setdefault(iid, Counter())
            t["prompts"] += 1
            t["samples"] += len(samples)
            t["followed"] += sum(s["finish_reason"] == "stop" and s["follow"][j] for s in samples)
        n_samples += len(samples)
        n_passed += sum(s["passed"] for s in samples)
        n_truncated += sum(s["finish_reason"] == "length" for s in samples)
        meta = _meta(item)
        n_pass = sum(s["passed"] for s in samples)
        if n_pass == len(samples):
            drops["dropped_all_pass"] += 1
        elif n_pass == 0:
            drops["dropped_all_fail"] += 1
        else:
            pick = choose_pair(samples)
            if pick is None:
                drops["dropped_no_nonempty_rejected"] += 1
            else:
                c, r = pick
                pairs.append({
                    "prompt": _user(item["prompt"]),
                    "chosen": _assistant(samples[c]["text"]),
                    "rejected": _assistant(samples[r]["text"]),
                    **meta,
                })
                for iid in item["instruction_id_list"]:
                    per_type[iid]["pairs"] += 1
        if 0 < n_pass < len(samples):
            if any(not s["text"].strip() for s in samples):
                drops["kway_dropped_empty_sample"] += 1
            else:
                kway.append({
                    "prompt": _user(item["prompt"]),
                    "completions": [_assistant(s["text"]) for s in samples],
                    "rewards": [1.0 if s["passed"] else 0.0 for s in samples],
                    **meta,
                })
        else:
            drops["kway_dropped_equal_rewards"] += 1
    stats: dict[str, Any] = {
        "prompts": len(scored),
        "samples": n_samples,
        "sample_pass_rate": n_passed / n_samples if n_samples else 0.0,
        "truncated_samples": n_truncated,
        "pairs": len(pairs),
        "kway_rows": len(kway),
        "dropped_all_pass": drops["dropped_all_pass"],
        "dropped_all_fail": drops["dropped_all_fail"],
        "dropped_no_nonempty_rejected": drops["dropped_no_nonempty_rejected"],
        "kway_dropped_equal_rewards": drops["kway_dropped_equal_rewards"],
        "kway_dropped_empty_sample": drops["kway_dropped_empty_sample"],
        "by_type": {
            k: {
                "prompts": v["prompts"],
                "pairs": v["pairs"],
                "sample_follow_rate": v["followed"] / v["samples"] if v["samples"] else 0.0,
            }
            for k, v in sorted(per_type.items())
        },
    }
    return pairs, kway, stats


def pass_rate(engine, rows: Sequence[Mapping[str, Any]], params: SamplingParams | None = None,
              progress: bool = False) -> dict[str, Any]:
    """IFEval metrics of ``engine`` on prompt ``rows`` (``alignkit.evals.ifeval.scoring.summarise``: the four
    accuracies, Wilson 95% intervals, per group and per instruction id), scored on the text as generated.

    ``params`` defaults to greedy decoding with ``DEFAULT_MAX_NEW_TOKENS``; with ``params.n > 1`` every
    sample is scored as a prompt. Also returns ``pass_rate`` (= prompt-level strict accuracy), ``passed``, ``n``,
    ``truncated`` (samples cut by the budget), ``params`` and ``results`` (``{"key", "instruction_id_list",
    "follow_strict", "follow_loose", "finish_reason", "text"}`` per sample, for a report's examples).
    """
    from alignkit.evals.ifeval.scoring import summarise

    params = params or SamplingParams(max_new_tokens=DEFAULT_MAX_NEW_TOKENS, temperature=0.0)
    scored = score_samples(engine, rows, params, progress=progress)
    results = [{"key": item["key"], "instruction_id_list": item["instruction_id_list"],
                "follow_strict": s["follow"], "follow_loose": follows(s["text"], item, loose=True),
                "finish_reason": s["finish_reason"], "text": s["text"]}
               for item in scored for s in item["samples"]]
    summary = summarise([{"instruction_id_list": r["instruction_id_list"],
                          "follow_instruction_list_strict": r["follow_strict"],
                          "follow_instruction_list_loose": r["follow_loose"]} for r in results])
    return {**summary, "n": len(results), "passed": sum(all(r["follow_strict"]) for r in results),
            "pass_rate": summary["prompt_level_strict_acc"] or 0.0,
            "truncated": sum(r["finish_reason"] == "length" for r in results), "params": asdict(params),
            "results": results}


def _jsonl(rows: Sequence[Mapping[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


class VerifiablePrefsConfig(StrictModel):
    """``alignkit data verifiable-prefs``: sample K responses per verifiable-instruction prompt, verify them,
    and write preference pairs, K-way rows, SFT rows and the held-out prompt set."""

    cli_aliases: ClassVar[dict[str, str]] = {"--out": "output_dir"}

    output_dir: str
    """Output directory (created): verifiable_{prefs,kway,sft,heldout}.jsonl and verifiable_summary.json,
    each replaced atomically after all sampling is done."""
    model: str = DEFAULT_MODEL
    """Policy to sample from (embedded name, HF directory or hub id)."""
    n_prompts: int = Field(default=200, ge=1)
    """Training prompts to sample on."""
    n_heldout: int = Field(default=500, ge=0)
    """Held-out prompts written for evaluation."""
    heldout_fraction: float = Field(default=0.25, gt=0.0, lt=1.0)
    """Hash-split share of generated prompts routed to held-out."""
    k: int = Field(default=4, ge=2)
    """Samples per training prompt (a pair needs a passing and a failing sample)."""
    temperature: float = Field(default=0.8, gt=0.0)
    """Sampling temperature (> 0: greedy decoding gives K identical samples)."""
    top_p: float = Field(default=0.95, gt=0.0, le=1.0)
    """Nucleus sampling mass."""
    max_new_tokens: int = Field(default=DEFAULT_MAX_NEW_TOKENS, ge=1)
    """Most new tokens per sample (a sample cut by it fails)."""
    seed: int = 0
    """Seeds both the prompt generator and sampling."""
    batch_size: int = Field(default=8, ge=1)
    """Generation batch (rows)."""
    dtype: Precision = "auto"
    """Policy precision for generation (auto: bf16 only where the hardware multiplies bf16 natively, else
    fp32; the resolved dtype is recorded in the summary)."""
    threads: int | None = Field(default=None, ge=1)
    """torch intra-op threads (null: torch's choice); 1 is much faster on a busy machine."""
    samples_out: str | None = None
    """Also write every verified sample (JSONL) here, e.g. to study the verifier's decisions."""
    base_pass_rate: bool = False
    """Also measure the model's greedy pass rate on the held-out prompts (slower)."""

    @model_validator(mode="after")
    def _useful(self) -> VerifiablePrefsConfig:
        if self.base_pass_rate and self.n_heldout == 0:
            raise ValueError("base_pass_rate needs held-out prompts (n_heldout > 0)")
        return self


def command_line(cfg: VerifiablePrefsConfig) -> str:
    """The ``alignkit data verifiable-prefs`` command that re-runs ``cfg`` (its non-default keys)."""
    import shlex

    given = cfg.model_dump(mode="json", exclude_defaults=True)
    return "alignkit data verifiable-prefs " + " ".join(
        shlex.quote(f"{k}={v if isinstance(v, str) else json.dumps(v)}") for k, v in given.items())


def run_verifiable_prefs(cfg: VerifiablePrefsConfig) -> int:
    """Sample, verify and write the files ``cfg`` describes; prints a one-line summary."""
    import torch

    from alignkit.generate.engine import make_engine
    from alignkit.precision import resolve_precision

    if cfg.threads is not None:
        # Spinning OpenMP workers on cores other processes use cost more than they give: measured
        # 0.35 s vs 2.6 s per batch-16 decode step (1 vs 2 threads) on 2 cores under load ~6.
        torch.set_num_threads(cfg.threads)

    train, heldout = make_splits(cfg.n_prompts, cfg.n_heldout, seed=cfg.seed, heldout_fraction=cfg.heldout_fraction)
    engine = make_engine(cfg.model, "hf", dtype=cfg.dtype, batch_size=cfg.batch_size)
    # Unseeded requests draw their seeds from torch's global RNG: one manual_seed fixes the whole run
    # while every prompt still gets its own sample stream.
    torch.manual_seed(cfg.seed)
    params = SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p, n=cfg.k)
    t0 = time.perf_counter()
    scored = score_samples(engine, train, params, progress=True)
    elapsed = time.perf_counter() - t0
    pairs, kway, stats = build_pairs(scored)
    sft = build_sft(scored)
    stats["sft_rows"] = len(sft)
    new_tokens = sum(s["tokens"] for item in scored for s in item["samples"])
    summary: dict[str, Any] = {
        "command": command_line(cfg),
        "model": cfg.model,
        "dtype": resolve_precision(cfg.dtype).dtype,
        "sampling": asdict(params),
        "seed": cfg.seed,
        "train_prompts": len(train),
        "heldout_prompts": len(heldout),
        "sampling_seconds": round(elapsed, 1),
        "new_tokens": new_tokens,
        "tokens_per_second": round(new_tokens / elapsed, 2) if elapsed > 0 else None,
        **stats,
    }
    if cfg.base_pass_rate:
        t0 = time.perf_counter()
        base = pass_rate(engine, heldout, SamplingParams(max_new_tokens=cfg.max_new_tokens), progress=True)
        summary["heldout_greedy_pass_rate"] = {k: v for k, v in base.items() if k not in ("results", "instructions")}
        summary["heldout_greedy_seconds"] = round(time.perf_counter() - t0, 1)
    _write_outputs(cfg, pairs, kway, sft, heldout, scored, summary)
    print(f"{len(pairs)} pairs, {len(kway)} K-way rows, {len(sft)} SFT rows from {len(train)} prompts x {cfg.k} "
          f"samples (all pass: {stats['dropped_all_pass']}, all fail: {stats['dropped_all_fail']}); "
          f"{new_tokens} tokens in {elapsed:.0f}s = {summary['tokens_per_second']} tok/s")
    if cfg.base_pass_rate:
        print(f"held-out greedy pass rate: {summary['heldout_greedy_pass_rate']['pass_rate']:.3f} "
              f"on {len(heldout)} prompts")
    print(f"wrote {cfg.output_dir}/verifiable_{{prefs,kway,sft,heldout}}.jsonl and verifiable_summary.json")
    return 0


def _write_outputs(cfg: VerifiablePrefsConfig, pairs: list[dict], kway: list[dict], sft: list[dict],
                   heldout: list[dict], scored: list[dict], summary: dict[str, Any]) -> None:
    # Everything is computed before the first write, and each file is replaced atomically.
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "verifiable_prefs.jsonl", _jsonl(pairs))
    write_atomic(out / "verifiable_kway.jsonl", _jsonl(kway))
    write_atomic(out / "verifiable_sft.jsonl", _jsonl(sft))
    write_atomic(out / "verifiable_heldout.jsonl", _jsonl(heldout))
    if cfg.samples_out:
        write_atomic(Path(cfg.samples_out), _jsonl(scored))
    write_atomic(out / "verifiable_summary.json", json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
