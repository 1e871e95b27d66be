#!/usr/bin/env python
"""alignkit SFT vs TRL's ``SFTTrainer``, side by side, in one invocation.

The companion of ``dpo_vs_trl.py`` (sharing its helpers in ``common.py``): same model, same rows in the same
order, same batch, precision, max length and optimizer (AdamW, constant LR, no warmup, no weight
decay, same betas/eps/clipping), the loss on completion tokens only on both sides (alignkit's only
mode; TRL's ``completion_only_loss``), each side in its own subprocess so that peak RSS is the
child's own ``ru_maxrss``.

Same tokens: TRL is given each row as plain text, the prompt rendered by the chat template for
inference and the completion cut right after ``<|im_end|>``, exactly as alignkit tokenises it (TRL's
conversational path would also train on the newline the template puts after ``<|im_end|>``, which
changes the per-token mean: see benchmarks/README.md). The script checks afterwards that TRL's
``input_ids`` and loss positions equal alignkit's row by row, so the step-0 losses must agree.

Data order: alignkit's seeded permutation (``step_indices``), handed to TRL in that order with
``train_sampling_strategy="sequential"``.

Exit status: 0 ok; 1 step-0 losses differ by more than 1e-3 or the tokens differ; 2 bad
arguments or data; 3 a run failed (its log is printed).

    .venv/bin/python benchmarks/sft_vs_trl.py --precision fp32 --steps 3
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from common import (
    PARITY_TOL,
    RunFailed,
    add_shared_args,
    bench_main,
    common_overrides,
    default_pairs,
    fmt_mb,
    matmul_peak,
    median_after_first,
    n_params,
    pin_threads,
    run_worker,
    time_trainer,
    trl_common_args,
    trl_recorder,
)


def worker_alignkit(spec: dict) -> dict:
    """Train with ``alignkit.train.sft.train_sft``; instrumentation only wraps the step."""
    pin_threads(spec["threads"])
    from alignkit.config import load_config
    from alignkit.train import sft

    timing: dict = {"step_end": [], "cpu_end": [], "rss_kb": []}
    time_trainer(timing)
    cfg = load_config(sft.SFTConfig, None, spec["overrides"])
    sft.train_sft(cfg)
    logs = [json.loads(line) for line in (Path(cfg.train.output_dir) / "metrics.jsonl").read_text().splitlines()]
    ends, cpu = [timing["train_start"], *timing["step_end"]], [timing["cpu_start"], *timing["cpu_end"]]
    return {"steps": [{"step": g["step"], "loss": g["loss"], "grad_norm": g["grad_norm"],
                       "step_s": ends[i + 1] - ends[i], "step_cpu_s": cpu[i + 1] - cpu[i],
                       "rss_kb": timing["rss_kb"][i]} for i, g in enumerate(logs)]}


def worker_trl(spec: dict) -> dict:
    """Train with TRL's SFTTrainer; a callback records step-end times and RSS."""
    pin_threads(spec["threads"])
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    rows = [json.loads(line) for line in Path(spec["rows"]).read_text().splitlines()]
    tok = AutoTokenizer.from_pretrained(spec["model"])
    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32)  # fp32 master weights
    args = SFTConfig(**trl_common_args(spec), packing=False, padding_free=False, completion_only_loss=True)
    recorder, timing, steps_logged = trl_recorder()
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                         callbacks=[recorder])
    ds = trainer.train_dataset
    tokens = {"input_ids": [list(x) for x in ds["input_ids"]], "labels": [list(x) for x in ds["labels"]]}
    trainer.train()
    ends, cpu = [timing["train_start"], *timing["step_end"]], [timing["cpu_start"], *timing["cpu_end"]]
    steps = []
    for i, s in enumerate(sorted(steps_logged)):
        g = steps_logged[s]
        steps.append({"step": s, "loss": g["loss"], "grad_norm": g["grad_norm"], "num_tokens": g.get("num_tokens"),
                      "step_s": ends[i + 1] - ends[i], "step_cpu_s": cpu[i + 1] - cpu[i],
                      "rss_kb": timing["rss_kb"][i]})
    return {"steps": steps, "tokens": tokens}


WORKERS = {"alignkit": worker_alignkit, "trl": worker_trl}


def alignkit_overrides(a, model: str, data: str, output_dir: str) -> list[str]:
    return common_overrides(a, model, data, output_dir)


def plan(a, model: str, data: str):
    """alignkit's tokenised examples, its visiting order, and TRL's text rows for that order."""
    from alignkit.config import load_config
    from alignkit.data.rows import read_rows
    from alignkit.data.tokenize import ChatTokenizer
    from alignkit.models import load_tokenizer
    from alignkit.train.loop import step_indices
    from alignkit.train.run import load_data
    from alignkit.train.sft import SFTConfig

    cfg = load_config(SFTConfig, None, alignkit_overrides(a, model, data, "unused"))
    tok = load_tokenizer(model)
    examples, _, summary = load_data(cfg.data, "sft", tok, cfg.train.seed)
    order = [examples[i] for s in range(a.steps) for i in step_indices(len(examples), s, a.batch_size, cfg.train.seed)]
    source = {row.index: row for row in read_rows(data, "sft")}
    chat = ChatTokenizer(tok)
    trl_rows = []
    for ex in order:
        row = source[ex.index]
        trl_rows.append({"prompt": chat.render_prompt(row.prompt, True),
                         "completion": chat.completion_text(row.prompt, row.completions[0], True)})
    return examples, order, summary, trl_rows


def token_report(order, trl_tokens, max_length: int) -> str | None:
    """None if TRL trains on exactly alignkit's tokens and loss positions, else what differs."""
    if len(trl_tokens["input_ids"]) != len(order):
        return f"TRL kept {len(trl_tokens['input_ids'])} rows, alignkit visits {len(order)}"
    for j, ex in enumerate(order):
        ids = (ex.prompt_ids + ex.completion_ids[0])[:max_length]
        mask = ([0] * len(ex.prompt_ids) + [1] * len(ex.completion_ids[0]))[:max_length]
        theirs, labels = trl_tokens["input_ids"][j], trl_tokens["labels"][j]
        if theirs != ids:
            k = next((i for i, (x, y) in enumerate(zip(ids, theirs, strict=False)) if x != y), min(len(ids), len(theirs)))
            return f"row {j}: token ids differ from position {k} (alignkit {len(ids)}, TRL {len(theirs)} tokens)"
        if [int(x != -100) for x in labels] != mask:
            return f"row {j}: the loss positions differ"
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="model name or HF dir (default: the embedded smollm2-135m-instruct)")
    p.add_argument("--rows", type=int, default=None, help="generated rows (default: steps x batch size)")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=4, help="rows per optimizer step (no accumulation)")
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--lr", type=float, default=1e-5)
    add_shared_args(p)
    a = p.parse_args(argv)
    for name in ("steps", "batch_size", "max_length", "threads"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if a.rows is not None and a.rows < 1:
        p.error("--rows must be >= 1")
    return bench_main(p, a, WORKERS, "sft_vs_trl.", run)


def run(a, workdir: Path, model: str) -> int:
    import trl

    data = workdir / "sft.jsonl"
    rows = [{"prompt": r["prompt"], "completion": r["chosen"]} for r in default_pairs(a.rows or a.steps * a.batch_size)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    examples, order, summary, trl_rows = plan(a, model, str(data))
    trl_path = workdir / "trl_rows.jsonl"
    trl_path.write_text("".join(json.dumps(r) + "\n" for r in trl_rows))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": str(a.threads), "MKL_NUM_THREADS": str(a.threads),
           "ALIGNKIT_HOME": str(workdir / "alignkit_home"), "HF_DATASETS_CACHE": str(workdir / "hf_datasets")}
    load_before = os.getloadavg()
    peak = matmul_peak(a.precision, a.threads)
    base = {"threads": a.threads, "model": model}
    try:
        ak_res, ak_proc = run_worker("alignkit", {**base, "name": "alignkit", "overrides": alignkit_overrides(
            a, model, str(data), str(workdir / "alignkit"))}, workdir, env, script=__file__)
        tr_res, tr_proc = run_worker("trl", {**base, "name": "trl", "rows": str(trl_path), "args": vars(a),
                                            "output_dir": str(workdir / "trl")}, workdir, env, script=__file__)
    except RunFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    load_after = os.getloadavg()
    peak = max(peak, matmul_peak(a.precision, a.threads))  # best of start and end: one burst can be unlucky
    mismatch = token_report(order, tr_res["tokens"], a.max_length)
    tokens = [sum(min(len(ex.prompt_ids) + len(ex.completion_ids[0]), a.max_length)
                  for ex in order[s * a.batch_size:(s + 1) * a.batch_size]) for s in range(a.steps)]
    ak, tr = ak_res["steps"], tr_res["steps"]
    n = min(len(ak), len(tr))
    out: list[str] = []
    w = out.append
    w(f"alignkit SFT vs TRL {trl.__version__} SFTTrainer — model {Path(model).name}, {len(examples)} rows "
      f"({summary.as_dict()}), batch {a.batch_size} rows, max_length {a.max_length}, {a.precision}, lr {a.lr} "
      f"constant, AdamW betas {tuple(a.adam_betas)} eps {a.adam_eps}, wd 0, clip {a.max_grad_norm}, grad ckpt "
      f"{'on' if a.gradient_checkpointing else 'off'}, completion-only loss, {a.steps} steps, {a.threads} threads")
    w(f"load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f} on {os.cpu_count()} CPUs "
      "(compare ratios within this run)")
    w("")
    hdr = f"{'step':>4} {'loss alignkit':>14} {'loss TRL':>12} {'diff':>10} {'gnorm ak':>9} {'gnorm TRL':>9} " \
          f"{'s ak':>7} {'s TRL':>7} {'tokens':>7}"
    w(hdr)
    w("-" * len(hdr))
    for i in range(n):
        w(f"{i:>4} {ak[i]['loss']:>14.6f} {tr[i]['loss']:>12.6f} {tr[i]['loss'] - ak[i]['loss']:>+10.2e} "
          f"{ak[i]['grad_norm']:>9.3f} {tr[i]['grad_norm']:>9.3f} {ak[i]['step_s']:>7.2f} {tr[i]['step_s']:>7.2f} "
          f"{tokens[i]:>7}")
    w("")
    d0 = abs(tr[0]["loss"] - ak[0]["loss"])
    ok = d0 <= PARITY_TOL and mismatch is None
    w(f"step-0 loss: alignkit {ak[0]['loss']:.6f}, TRL {tr[0]['loss']:.6f}; |diff| {d0:.2e} "
      f"{'<=' if d0 <= PARITY_TOL else '>'} {PARITY_TOL:g}: {'PASS' if d0 <= PARITY_TOL else 'FAIL'}")
    w("tokens: TRL's input_ids and loss positions equal alignkit's in every row, same order" if mismatch is None
      else f"tokens MISMATCH: {mismatch}")
    w("")

    def speed(steps):
        med = median_after_first([s["step_s"] for s in steps])
        tps = sum(tokens[1:n]) / sum(s["step_s"] for s in steps[1:n]) if n > 1 else tokens[0] / steps[0]["step_s"]
        return med, tps

    (ak_med, ak_tps), (tr_med, tr_tps) = speed(ak), speed(tr)
    ak_cpu, tr_cpu = (median_after_first([s["step_cpu_s"] for s in x]) for x in (ak, tr))
    w(f"{'':28} {'alignkit':>12} {'TRL':>12} {'TRL/alignkit':>13}")
    w(f"{'s/step (median, steps>=1)':28} {ak_med:>12.2f} {tr_med:>12.2f} {tr_med / ak_med:>13.2f}")
    w(f"{'tokens/s (steps>=1)':28} {ak_tps:>12.1f} {tr_tps:>12.1f} {tr_tps / ak_tps:>13.2f}")
    w(f"{'CPU s/step (median)':28} {ak_cpu:>12.2f} {tr_cpu:>12.2f} {tr_cpu / ak_cpu:>13.2f}")
    w(f"{'peak RSS, whole process':28} {fmt_mb(ak_proc['peak_rss_kb']):>12} {fmt_mb(tr_proc['peak_rss_kb']):>12} "
      f"{tr_proc['peak_rss_kb'] / ak_proc['peak_rss_kb']:>13.2f}")
    w(f"{'wall time, whole process':28} {ak_proc['wall_s']:>11.1f}s {tr_proc['wall_s']:>11.1f}s "
      f"{tr_proc['wall_s'] / ak_proc['wall_s']:>13.2f}")
    w(f"alignkit vs TRL: tokens/s x{ak_tps / tr_tps:.2f}, peak RSS x{ak_proc['peak_rss_kb'] / tr_proc['peak_rss_kb']:.2f}")
    fl = 6 * n_params(model)
    w(f"training throughput as a fraction of the {a.precision} matmul peak ({peak:.3f} TFLOP/s, best of start and end; "
      f"6N FLOPs per real token): alignkit {ak_tps * fl / 1e12 / peak:.0%}, TRL {tr_tps * fl / 1e12 / peak:.0%}")
    w("(alignkit's whole-process figures include its final HF export; TRL saves nothing)")
    w("")
    w(f"RESULT: {'PASS' if ok else 'FAIL'} (step-0 loss parity within {PARITY_TOL:g}, identical tokens)")
    print("\n".join(out))
    if a.json_out:
        Path(a.json_out).write_text(json.dumps({
            "args": vars(a), "alignkit": {**ak_res, **ak_proc}, "trl": {"steps": tr, **tr_proc}, "tokens": tokens,
            "mismatch": mismatch, "load": [load_before, load_after], "peak_tflops": peak, "pass": ok}, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
