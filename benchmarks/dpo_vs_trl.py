#!/usr/bin/env python
"""alignkit DPO vs TRL's ``DPOTrainer``, side by side, in one invocation.

Both sides get the same model, data, data order, batch, precision, max length, beta and
optimizer (AdamW, constant LR, no warmup, no weight decay, same betas/eps/clipping), and each
runs in its own subprocess, one after the other, pinned to the same thread count, so peak RSS is
the kernel's per-process figure (``os.wait4`` rusage) and no side inherits the other's memory.

Runs, in order:
  1. alignkit, cold reference cache (a fresh ``ALIGNKIT_HOME`` for this invocation);
  2. TRL ``DPOTrainer`` (its defaults: a reference-model copy in memory, reference forward per step);
  3. alignkit again, warm cache: the reference log-probs come from disk;
  4. a small fp32 probe that scores the step-0 batch under both tokenisations with one code path,
     to separate tokenisation differences from numerical ones in the step-0 log-prob comparison.

Data order: alignkit draws each step's examples from a seeded permutation (``step_indices``);
TRL is given exactly that sequence of rows with ``train_sampling_strategy="sequential"``, and
the tokenised rows of both sides are compared position by position afterwards.

Exit status: 0 ok; 1 the step-0 losses differ by more than 1e-3 or the two sides did not see the
same rows; 2 bad arguments or data; 3 a run failed (its log is printed).

    .venv/bin/python benchmarks/dpo_vs_trl.py --precision fp32
    .venv/bin/python benchmarks/dpo_vs_trl.py --precision bf16 --steps 5 --batch-size 4
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import (
    PARITY_TOL,
    RunFailed,
    add_shared_args,
    default_pairs,
    doc_text,
    dpo_overrides,
    fmt_mb,
    matmul_peak,
    maxrss_kb,
    median_after_first,
    n_params,
    pin_threads,
    run_worker,
    time_trainer,
    trl_common_args,
    trl_recorder,
)

PAIRS_DEFAULT_NOTE = "steps x batch size, so every pair is seen once and alignkit's cold reference pass is no larger than TRL's"


# --------------------------------------------------------------------------------------------
# Default data: deterministic conversational pairs over real English text (CPython's docs).
# --------------------------------------------------------------------------------------------




def long_pairs(n: int, prompt_tokens: int, completion_tokens: int, model: str) -> list[dict]:
    """``n`` rows whose prompt is ~``prompt_tokens`` tokens of documentation text followed by a question.

    The chosen answer is ``completion_tokens`` tokens of on-topic text, the rejected one 7/8 of that
    length of off-topic text (so the two differ in length and batches carry padding). Lengths are cut
    with the model's own tokenizer, so they are close to exact after the chat template is applied.
    """
    import pydoc_data.topics as t

    from alignkit.models import load_tokenizer

    tok = load_tokenizer(model)
    keys = sorted(t.topics)
    cut = doc_text(tok)
    rows = []
    for i in range(n):
        title = keys[(7 * i) % len(keys)]
        doc = cut(9973 * i, prompt_tokens)
        rows.append({
            "prompt": [{"role": "user", "content": f"{doc}\n\nUsing the documentation above, explain '{title}'."}],
            "chosen": [{"role": "assistant", "content": cut(9973 * i + prompt_tokens, completion_tokens)}],
            "rejected": [{"role": "assistant", "content": cut(7919 * i + 31 * prompt_tokens, completion_tokens * 7 // 8)}],
        })
    return rows


# --------------------------------------------------------------------------------------------
# Workers (each runs in its own subprocess: `dpo_vs_trl.py --worker KIND SPEC.json`)
# --------------------------------------------------------------------------------------------






def worker_alignkit(spec: dict) -> dict:
    """Train with ``alignkit.train.preference.train_preference``; instrumentation only wraps timers."""
    pin_threads(spec["threads"])
    from alignkit.config import load_config
    from alignkit.train import preference, refcache

    timing: dict = {"reference_s": 0.0, "step_end": [], "cpu_end": [], "rss_kb": []}
    orig_ref = refcache.load_or_compute

    def timed_ref(*a, **k):
        t = time.perf_counter()
        try:
            return orig_ref(*a, **k)
        finally:
            timing["reference_s"] += time.perf_counter() - t
            timing["rss_after_ref_kb"] = maxrss_kb()

    refcache.load_or_compute = timed_ref
    time_trainer(timing)
    cfg = load_config(preference.PreferenceConfig, None, spec["overrides"])
    summary = preference.train_preference(cfg)
    logs = [json.loads(line) for line in (Path(cfg.train.output_dir) / "metrics.jsonl").read_text().splitlines()]
    ends = [timing["train_start"], *timing["step_end"]]
    cpu = [timing["cpu_start"], *timing["cpu_end"]]
    return {
        "steps": [{"step": g["step"], "loss": g["loss"], "grad_norm": g["grad_norm"], "lr": g["lr"],
                   "logps/chosen": g["logps/chosen"], "logps/rejected": g["logps/rejected"],
                   "step_s": ends[i + 1] - ends[i], "step_cpu_s": cpu[i + 1] - cpu[i],
                   "rss_kb": timing["rss_kb"][i]} for i, g in enumerate(logs)],
        "reference_s": timing["reference_s"],
        "rss_phases_kb": {"after reference pass": timing.get("rss_after_ref_kb"),
                          "train start": timing.get("rss_train_start_kb")},
        "reference_cache": summary["reference_cache"],
        "data": summary["data"],
    }






def worker_trl(spec: dict) -> dict:
    """Train with TRL's DPOTrainer; a callback records step-end times and RSS."""
    pin_threads(spec["threads"])
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    rows = [json.loads(line) for line in Path(spec["rows"]).read_text().splitlines()]
    tok = AutoTokenizer.from_pretrained(spec["model"])
    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32)
    args = DPOConfig(**trl_common_args(spec), beta=spec["args"]["beta"], loss_type=["sigmoid"])
    recorder, timing, steps_logged = trl_recorder()
    trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                         callbacks=[recorder])
    ds = trainer.train_dataset
    tokens = {k: [list(ids) for ids in ds[k]] for k in ("prompt_ids", "chosen_ids", "rejected_ids")}
    trainer.train()
    ends = [timing["train_start"], *timing["step_end"]]
    cpu = [timing["cpu_start"], *timing["cpu_end"]]
    steps = []
    for i, s in enumerate(sorted(steps_logged)):
        g = steps_logged[s]
        steps.append({"step": s, "loss": g["loss"], "grad_norm": g["grad_norm"], "lr": g["learning_rate"],
                      "logps/chosen": g["logps/chosen"], "logps/rejected": g["logps/rejected"],
                      "num_tokens": g.get("num_tokens"), "step_s": ends[i + 1] - ends[i],
                      "step_cpu_s": cpu[i + 1] - cpu[i],
                      "rss_kb": timing["rss_kb"][i]})
    return {"steps": steps, "tokens": tokens, "rss_phases_kb": {"train start": timing.get("rss_train_start_kb")}}


def worker_probe(spec: dict) -> dict:
    """Score the step-0 sequences of both tokenisations with one code path (fp32, no grad)."""
    pin_threads(spec["threads"])
    import torch

    from alignkit.data.batching import collate
    from alignkit.data.tokenize import TokenizedExample
    from alignkit.models import load_causal_lm
    from alignkit.ops.logprobs import response_logps

    model = load_causal_lm(spec["model"])
    out = {}
    for name, examples in spec["batches"].items():
        exs = [TokenizedExample(i, e["prompt"], [e["chosen"], e["rejected"]]) for i, e in enumerate(examples)]
        b = collate(exs, spec["pad_id"])
        with torch.no_grad():
            lp = response_logps(model, b["input_ids"], b["attention_mask"], b["loss_mask"]).logps
        n = len(exs)
        out[name] = {"chosen": lp[:n].tolist(), "rejected": lp[n:].tolist()}
    return out


WORKERS = {"alignkit": worker_alignkit, "trl": worker_trl, "probe": worker_probe}


# --------------------------------------------------------------------------------------------
# Parent: prepare data and order, run the workers, compare, print.
# --------------------------------------------------------------------------------------------








def plan_order(a, model: str, data: str):
    """alignkit's tokenised examples and its per-step visiting order, from alignkit's own functions."""
    from alignkit.config import load_config
    from alignkit.data.rows import read_rows
    from alignkit.models import load_tokenizer
    from alignkit.train.loop import step_indices
    from alignkit.train.preference import PreferenceConfig, _detect_kind
    from alignkit.train.run import load_data

    cfg = load_config(PreferenceConfig, None, dpo_overrides(a, model, data, "unused"))
    if _detect_kind(data) != "preference":
        raise ValueError(f"{data}: this benchmark compares pairwise DPO; K-way rows are not supported")
    tok = load_tokenizer(model)
    examples, _, summary = load_data(cfg.data, "preference", tok, cfg.train.seed, pairwise=True)
    order = [examples[i] for s in range(a.steps) for i in step_indices(len(examples), s, a.batch_size, cfg.train.seed)]
    source = {row.index: row for row in read_rows(data, "preference")}
    return tok, examples, order, summary, source


def trl_row(row) -> dict:
    """The canonical (explicit-prompt) form of an alignkit row, which TRL reads unchanged."""
    return {"prompt": row.prompt, "chosen": row.completions[0], "rejected": row.completions[1]}


def boundary_report(tok, order, trl_tokens, max_length: int) -> dict:
    """Compare the two tokenisations row by row (same position = same step and slot)."""
    n_trl = len(trl_tokens["prompt_ids"])
    if n_trl != len(order):
        return {"same_rows": False, "detail": f"TRL kept {n_trl} rows, alignkit visits {len(order)}"}
    extra: dict[str, int] = {}
    identical = truncated_same = 0
    for j, ex in enumerate(order):
        tp = trl_tokens["prompt_ids"][j]
        if tp != ex.prompt_ids:
            return {"same_rows": False, "detail": f"row {j}: prompts differ (TRL {len(tp)} tokens, alignkit "
                                                  f"{len(ex.prompt_ids)}) — data order or prompt tokenisation"}
        for ours, theirs in zip(ex.completion_ids, (trl_tokens["chosen_ids"][j], trl_tokens["rejected_ids"][j]),
                                strict=True):
            theirs = theirs[: max(0, max_length - len(tp))]  # TRL's collator truncates keep_start
            if theirs == ours:
                if len(tp) + len(ours) >= max_length:
                    truncated_same += 1
                else:
                    identical += 1
            elif theirs[: len(ours)] == ours:
                key = repr(tok.convert_ids_to_tokens(theirs[len(ours):]))
                extra[key] = extra.get(key, 0) + 1
            else:
                k = next(i for i, (x, y) in enumerate(zip(ours, theirs, strict=False)) if x != y) \
                    if any(x != y for x, y in zip(ours, theirs, strict=False)) else min(len(ours), len(theirs))
                key = f"differs at completion token {k}"
                extra[key] = extra.get(key, 0) + 1
    return {"same_rows": True, "identical": identical, "truncated_identical": truncated_same, "trl_extra": extra}


def step_tokens(prompt: list[int], completions: list[list[int]], max_length: int) -> int:
    """Real (non-pad) tokens of one pair's sequences: sum over completions of min(len(prompt+c), L)."""
    return sum(min(len(prompt) + len(c), max_length) for c in completions)














def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="model name or HF dir (default: the embedded smollm2-135m-instruct)")
    p.add_argument("--data", default=None, help="TRL-style preference JSONL (default: generated pairs)")
    p.add_argument("--pairs", type=int, default=None, help=f"generated pairs (default: {PAIRS_DEFAULT_NOTE})")
    p.add_argument("--prompt-tokens", type=int, default=None,
                   help="generate long-prompt pairs: ~N tokens of documentation text per prompt")
    p.add_argument("--completion-tokens", type=int, default=128,
                   help="with --prompt-tokens: tokens of the chosen completion (rejected: 7/8 of it)")
    p.add_argument("--no-warm", action="store_true", help="skip the warm-cache alignkit run (saves one run)")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=4, help="pairs per optimizer step (no accumulation)")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--lr", type=float, default=5e-6)
    add_shared_args(p)
    a = p.parse_args(argv)

    if a.worker:
        kind, spec_path = a.worker
        spec = json.loads(Path(spec_path).read_text())
        result = WORKERS[kind](spec)
        Path(spec["result"]).write_text(json.dumps(result))
        return 0

    for name in ("steps", "batch_size", "max_length", "threads"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if a.pairs is not None and a.data:
        p.error("--pairs generates data; it cannot be combined with --data")
    if a.prompt_tokens is not None and a.data:
        p.error("--prompt-tokens generates data; it cannot be combined with --data")
    if a.prompt_tokens is not None and (a.prompt_tokens < 1 or a.completion_tokens < 8):
        p.error("--prompt-tokens must be >= 1 and --completion-tokens >= 8")
    if a.pairs is not None and a.pairs < 1:
        p.error("--pairs must be >= 1")
    try:
        import trl  # noqa: F401
    except ImportError:
        p.error("TRL is not installed: .venv/bin/pip install -c constraints.txt '.[bench]'")
    return run(a)


def run(a) -> int:
    from alignkit.models import DEFAULT_MODEL, resolve_model_path

    keep = a.workdir is not None
    workdir = Path(a.workdir or tempfile.mkdtemp(prefix="dpo_vs_trl."))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        return _run(a, workdir, resolve_model_path(a.model or DEFAULT_MODEL))
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


def _run(a, workdir: Path, model: str) -> int:
    import trl

    from alignkit.errors import DataError

    if a.data:
        data = str(Path(a.data).resolve())
    else:
        data = str(workdir / "pairs.jsonl")
        n_pairs = a.pairs or a.steps * a.batch_size
        rows = (long_pairs(n_pairs, a.prompt_tokens, a.completion_tokens, model) if a.prompt_tokens
                else default_pairs(n_pairs))
        Path(data).write_text("".join(json.dumps(r) + "\n" for r in rows))
    try:
        tok, examples, order, summary, source = plan_order(a, model, data)
    except (DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    trl_rows = workdir / "trl_rows.jsonl"
    trl_rows.write_text("".join(json.dumps(trl_row(source[ex.index])) + "\n" for ex in order))

    # Same environment for every run: offline, same thread count, fresh alignkit cache dir
    # (the model is passed as a resolved directory, so nothing else is read from ALIGNKIT_HOME).
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": str(a.threads), "MKL_NUM_THREADS": str(a.threads),
           "ALIGNKIT_HOME": str(workdir / "alignkit_home"), "HF_DATASETS_CACHE": str(workdir / "hf_datasets")}
    load_before = os.getloadavg()
    peak = matmul_peak(a.precision, a.threads)
    base = {"threads": a.threads, "model": model}
    ak_spec = lambda name: {**base, "name": name,  # noqa: E731
                            "overrides": dpo_overrides(a, model, data, str(workdir / name))}
    try:
        cold, cold_proc = run_worker("alignkit", ak_spec("alignkit_cold"), workdir, env, script=__file__)
        trl_res, trl_proc = run_worker("trl", {**base, "name": "trl", "rows": str(trl_rows), "args": vars(a),
                                              "output_dir": str(workdir / "trl")}, workdir, env, script=__file__)
        warm, warm_proc = (None, None) if a.no_warm else run_worker("alignkit", ak_spec("alignkit_warm"), workdir, env, script=__file__)
        bnd = boundary_report(tok, order, trl_res["tokens"], a.max_length)
        probe = None
        if bnd["same_rows"]:
            step0 = range(a.batch_size)
            ak_b = [{"prompt": order[j].prompt_ids, "chosen": order[j].completion_ids[0],
                     "rejected": order[j].completion_ids[1]} for j in step0]
            tt = trl_res["tokens"]
            trl_b = []
            for j in step0:
                budget = a.max_length - len(tt["prompt_ids"][j])
                trl_b.append({"prompt": tt["prompt_ids"][j], "chosen": tt["chosen_ids"][j][:budget],
                              "rejected": tt["rejected_ids"][j][:budget]})
            probe, _ = run_worker("probe", {**base, "name": "probe", "pad_id": tok.pad_token_id,
                                            "batches": {"alignkit": ak_b, "trl": trl_b}}, workdir, env, script=__file__)
    except RunFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    load_after = os.getloadavg()
    peak = max(peak, matmul_peak(a.precision, a.threads))  # best of start and end: one burst can be unlucky

    # Tokens per step, counted the same way for both: real (non-pad) tokens of every sequence.
    ak_tokens = [sum(step_tokens(ex.prompt_ids, ex.completion_ids, a.max_length)
                     for ex in order[s * a.batch_size:(s + 1) * a.batch_size]) for s in range(a.steps)]
    tt = trl_res["tokens"]
    trl_tokens = [sum(step_tokens(tt["prompt_ids"][j], [tt["chosen_ids"][j], tt["rejected_ids"][j]], a.max_length)
                      for j in range(s * a.batch_size, min((s + 1) * a.batch_size, len(tt["prompt_ids"]))))
                  for s in range(a.steps)]

    ak, tr = cold["steps"], trl_res["steps"]
    out = []
    w = out.append
    w(f"alignkit DPO vs TRL {trl.__version__} DPOTrainer — model {Path(model).name}, {len(examples)} pairs "
      f"({summary.as_dict()}), batch {a.batch_size} pairs, max_length {a.max_length}, {a.precision}, "
      f"beta {a.beta}, lr {a.lr} constant, AdamW betas {tuple(a.adam_betas)} eps {a.adam_eps}, wd 0, "
      f"clip {a.max_grad_norm}, grad ckpt {'on' if a.gradient_checkpointing else 'off'}, {a.steps} steps, "
      f"{a.threads} threads")
    w(f"load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f} on {os.cpu_count()} CPUs "
      "(timings are from one shared machine; compare ratios within this run)")
    w("")
    hdr = (f"{'step':>4} {'loss alignkit':>14} {'loss TRL':>12} {'diff':>10} {'gnorm ak':>9} {'gnorm TRL':>9} "
           f"{'s ak':>7} {'s TRL':>7} {'tok ak':>7} {'tok TRL':>7}")
    w(hdr)
    w("-" * len(hdr))
    n = min(len(ak), len(tr))
    for i in range(n):
        w(f"{i:>4} {ak[i]['loss']:>14.6f} {tr[i]['loss']:>12.6f} {tr[i]['loss'] - ak[i]['loss']:>+10.2e} "
          f"{ak[i]['grad_norm']:>9.3f} {tr[i]['grad_norm']:>9.3f} {ak[i]['step_s']:>7.2f} {tr[i]['step_s']:>7.2f} "
          f"{ak_tokens[i]:>7} {trl_tokens[i]:>7}")
    w("(step i = the i-th optimizer step; its loss is computed before that step's update)")
    w("")

    d0 = abs(tr[0]["loss"] - ak[0]["loss"])
    parity_ok = d0 <= PARITY_TOL and bnd["same_rows"]
    w(f"step-0 loss: alignkit {ak[0]['loss']:.6f}, TRL {tr[0]['loss']:.6f}, ln 2 = {math.log(2):.6f}; "
      f"|diff| {d0:.2e} {'<=' if d0 <= PARITY_TOL else '>'} {PARITY_TOL:g}: {'PASS' if d0 <= PARITY_TOL else 'FAIL'}")
    for side in ("chosen", "rejected"):
        key = f"logps/{side}"
        diff = tr[0][key] - ak[0][key]
        line = f"step-0 {key} (batch mean): alignkit {ak[0][key]:.4f}, TRL {tr[0][key]:.4f}, TRL - alignkit {diff:+.4f}"
        if probe:
            tok_eff = statistics.fmean(probe["trl"][side]) - statistics.fmean(probe["alignkit"][side])
            line += f"; tokenisation effect (fp32 probe) {tok_eff:+.4f}, residual {diff - tok_eff:+.4f}"
        w(line)
    if bnd["same_rows"]:
        w(f"data order: identical prompts at every position of all {len(order)} rows (same rows, same order)")
        w(f"boundary: {bnd['identical']} completions tokenised identically, {bnd['truncated_identical']} identical "
          f"after truncation to max_length; TRL-only trailing tokens: "
          + (", ".join(f"{k} x{v}" for k, v in bnd["trl_extra"].items()) or "none"))
    else:
        w(f"data order/tokenisation MISMATCH: {bnd['detail']}")
    trl_nt = tr[-1].get("num_tokens")
    if trl_nt is not None and trl_nt != sum(trl_tokens[:n]):
        w(f"note: TRL's own num_tokens {trl_nt} != counted {sum(trl_tokens[:n])}")
    w("")

    def speed(steps, tokens):
        med = median_after_first([s["step_s"] for s in steps])
        tps = sum(tokens[1:n]) / sum(s["step_s"] for s in steps[1:n]) if n > 1 else tokens[0] / steps[0]["step_s"]
        return med, tps

    ak_med, ak_tps = speed(ak, ak_tokens)
    tr_med, tr_tps = speed(tr, trl_tokens)
    w(f"{'':28} {'alignkit':>12} {'TRL':>12} {'TRL/alignkit':>13}")
    w(f"{'s/step (median, steps>=1)':28} {ak_med:>12.2f} {tr_med:>12.2f} {tr_med / ak_med:>13.2f}")
    w(f"{'tokens/s (steps>=1)':28} {ak_tps:>12.1f} {tr_tps:>12.1f} {tr_tps / ak_tps:>13.2f}")
    ak_cpu, tr_cpu = (median_after_first([s["step_cpu_s"] for s in x]) for x in (ak, tr))
    w(f"{'CPU s/step (median)':28} {ak_cpu:>12.2f} {tr_cpu:>12.2f} {tr_cpu / ak_cpu:>13.2f}")
    w(f"{'peak RSS, whole process':28} {fmt_mb(cold_proc['peak_rss_kb']):>12} {fmt_mb(trl_proc['peak_rss_kb']):>12} "
      f"{trl_proc['peak_rss_kb'] / cold_proc['peak_rss_kb']:>13.2f}")
    w(f"{'peak RSS, end of last step':28} {fmt_mb(ak[-1]['rss_kb']):>12} {fmt_mb(tr[-1]['rss_kb']):>12} "
      f"{tr[-1]['rss_kb'] / ak[-1]['rss_kb']:>13.2f}")
    w(f"{'wall time, whole process':28} {cold_proc['wall_s']:>11.1f}s {trl_proc['wall_s']:>11.1f}s "
      f"{trl_proc['wall_s'] / cold_proc['wall_s']:>13.2f}")
    w(f"{'CPU time, whole process':28} {cold_proc['cpu_s']:>11.1f}s {trl_proc['cpu_s']:>11.1f}s "
      f"{trl_proc['cpu_s'] / cold_proc['cpu_s']:>13.2f}")
    ph = {**{f"alignkit {k}": v for k, v in cold.get("rss_phases_kb", {}).items() if v},
          **{f"TRL {k}": v for k, v in trl_res.get("rss_phases_kb", {}).items() if v},
          "alignkit after step 0": ak[0]["rss_kb"], "TRL after step 0": tr[0]["rss_kb"]}
    w("peak RSS so far, by phase: " + ", ".join(f"{k} {fmt_mb(v)}" for k, v in ph.items()))
    w(f"alignkit vs TRL: tokens/s x{ak_tps / tr_tps:.2f}, peak RSS x{cold_proc['peak_rss_kb'] / trl_proc['peak_rss_kb']:.2f}"
      " (issue targets: tokens/s >= x2 short pairs, >= x3 ~2k-token prompts; peak RSS <= x0.6)")
    if peak:
        fl = 6 * n_params(model)
        w(f"training throughput as a fraction of the {a.precision} matmul peak ({peak:.3f} TFLOP/s, best of start and end;"
          f" 6N FLOPs per real token): alignkit {ak_tps * fl / 1e12 / peak:.0%}, TRL {tr_tps * fl / 1e12 / peak:.0%}"
          " (target >= 50%)")
    w("(CPU seconds of all the process's threads: less sensitive than wall time to other load on the machine;"
      "\n alignkit's whole-process figures include its reference pass, final checkpoint and HF export; TRL saves"
      " nothing)")
    w("")
    if warm is None:
        w(f"alignkit reference log-probs (cold cache, included in its whole-process time): {cold['reference_s']:.2f}s;"
          " warm-cache run skipped (--no-warm)")
    else:
        wm, _ = speed(warm["steps"], ak_tokens)
        same = all(x["loss"] == y["loss"] for x, y in zip(cold["steps"], warm["steps"], strict=True))
        w("alignkit reference cache: cold run vs warm run")
        w(f"  reference log-probs: cold {cold['reference_s']:.2f}s (hit={cold['reference_cache']['hit']}), "
          f"warm {warm['reference_s']:.2f}s (hit={warm['reference_cache']['hit']})")
        w(f"  whole process: wall cold {cold_proc['wall_s']:.1f}s, warm {warm_proc['wall_s']:.1f}s; CPU cold "
          f"{cold_proc['cpu_s']:.1f}s, warm {warm_proc['cpu_s']:.1f}s; s/step median cold {ak_med:.2f}, warm {wm:.2f}")
        w(f"  losses of the two runs bitwise identical: {same}")
    w("")
    w(f"RESULT: {'PASS' if parity_ok else 'FAIL'} (step-0 loss parity within {PARITY_TOL:g}"
      f"{'' if bnd['same_rows'] else '; the two sides did not see the same rows'})")
    print("\n".join(out))

    if a.json_out:
        Path(a.json_out).write_text(json.dumps({
            "args": vars(a), "model": model, "alignkit_cold": {**cold, **cold_proc}, "alignkit_warm": warm and {**warm, **warm_proc},
            "trl": {"steps": tr, **trl_proc}, "tokens": {"alignkit": ak_tokens, "trl": trl_tokens},
            "boundary": bnd, "probe": probe, "load": [load_before, load_after], "pass": parity_ok,
        }, indent=1))
    return 0 if parity_ok else 1


if __name__ == "__main__":
    sys.exit(main())
