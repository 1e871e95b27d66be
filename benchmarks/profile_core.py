#!/usr/bin/env python
"""Where the compute core spends its time: torch.profiler on the four inner loops (docs/performance.md).

Scenarios (each short; pick with ``--only``):

* ``matmul``     — the machine's matmul peak (2048x576x1536, SmolLM2's MLP shape) in fp32 and bf16;
* ``dpo_short``  — one DPO forward+backward on 4 pairs of <= 256 tokens (response log-probs, both completions);
* ``dpo_long``   — one DPO forward+backward on 1 pair with a ~2.4k-token prompt and 128-token completions,
  as separate sequences and as one shared-prompt sequence;
* ``prefill``    — judge-style prefill (no grad, KV cache kept) of 2 prompts of ~1.5k and ~3k tokens;
* ``precision``  — one causal-LM forward+backward on 2 x 128 tokens in fp32 and under bf16 autocast (fp32
  master weights, as training runs it), timed without the profiler: is bf16 affordable here at all?
* ``decode``     — greedy decoding of 8 x 32 tokens with alignkit's engine (per-step time vs a forward's FLOPs).

Each prints wall time, model FLOPs, the fraction of the measured matmul peak, and the top ops of a
torch.profiler table (self CPU time).

    flock /tmp/alignkit-heavy.lock .venv/bin/python benchmarks/profile_core.py --threads 2
    flock /tmp/alignkit-heavy.lock .venv/bin/python benchmarks/profile_core.py --only dpo_long --rows 12
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from common import best_seconds, matmul_peak  # one definition of the peak for every benchmark


def model_flops(model, tokens: int, backward: bool) -> float:
    """6N (train) or 2N (inference) FLOPs per token, N = non-embedding parameters (attention ignored)."""
    n = sum(p.numel() for name, p in model.named_parameters() if "embed" not in name)
    return (6 if backward else 2) * n * tokens


def profiled(fn, rows: int, label: str, warmup: bool = True):
    from torch.profiler import ProfilerActivity, profile

    if warmup:
        fn()  # allocations, lazy inits
    t = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    wall = time.perf_counter() - t
    print(f"\n--- {label}: {wall:.2f} s (profiled) ---")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=48))
    return wall


def timed(fn, reps: int = 2) -> float:
    return best_seconds(fn, reps, warmup=False)


def _pair_batch(tok, prompt_len: int, comp_len: int, n_pairs: int, seed: int = 0):
    from alignkit.data.batching import collate
    from alignkit.data.tokenize import TokenizedExample

    g = torch.Generator().manual_seed(seed)
    exs = []
    for i in range(n_pairs):
        p = torch.randint(100, 20000, (prompt_len,), generator=g).tolist()
        c = [torch.randint(100, 20000, (comp_len - 7 * k,), generator=g).tolist() for k in range(2)]
        exs.append(TokenizedExample(index=i, prompt_ids=p, completion_ids=c))
    return exs, collate(exs, tok.pad_token_id)


def dpo_step(model, tok, exs, shared: bool, precision: str):
    """One forward+backward of the summed response log-probs, separate padded sequences or shared-prompt."""
    from alignkit.data.batching import collate, collate_segments
    from alignkit.train.run import LogpsForward, forward_logps

    fwd = LogpsForward(model)
    batch = collate_segments(exs, tok.pad_token_id) if shared else collate(exs, tok.pad_token_id)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")

    def run():
        model.zero_grad(set_to_none=True)
        with autocast:
            logps, _ = forward_logps(fwd, batch)
        logps.sum().backward()

    return run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rows", type=int, default=10, help="profiler table rows")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--only", nargs="*", default=["matmul", "dpo_short", "dpo_long", "prefill", "decode"],
                    choices=["matmul", "dpo_short", "dpo_long", "precision", "prefill", "decode"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from alignkit.models import load_causal_lm, load_tokenizer

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, load {os.getloadavg()}")
    peak32 = matmul_peak("fp32")
    peak16 = matmul_peak("bf16", reps=2)  # emulated bf16 takes ~0.3 s per call on CPUs without it
    peak = peak32 if args.precision == "fp32" else peak16
    if "matmul" in args.only:
        print(f"matmul peak (F.linear 2048x576 by 1536x576): fp32 {peak32:.3f} TFLOP/s, bf16 {peak16:.3f} TFLOP/s")
    tok = load_tokenizer(args.model)
    model = load_causal_lm(args.model, trainable=True)
    print(f"attention implementation: {model.config._attn_implementation}")

    for name, plen, clen, n in (("dpo_short", 96, 128, 4), ("dpo_long", 2400, 128, 1)):
        if name not in args.only:
            continue
        exs, batch = _pair_batch(tok, plen, clen, n)
        tokens = int(batch["attention_mask"].sum())
        for shared in (False, True):
            run = dpo_step(model, tok, exs, shared, args.precision)
            label = f"{name} {'shared-prompt' if shared else 'separate'} {tuple(batch['input_ids'].shape)}"
            wall = profiled(run, args.rows, label, warmup=name == "dpo_short")
            fl = model_flops(model, tokens, True)
            print(f"{label}: {tokens / wall:.0f} tok/s (separate-sequence tokens), "
                  f"{fl / wall / 1e12:.3f} TFLOP/s = {fl / wall / 1e12 / peak:.0%} of the {args.precision} matmul peak")

    if "precision" in args.only:
        ids = torch.randint(100, 20000, (2, 128))
        for prec in ("fp32", "bf16"):
            def step(prec=prec):
                model.zero_grad(set_to_none=True)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=prec == "bf16"):
                    loss = model(input_ids=ids, labels=ids).loss
                loss.backward()

            sec = timed(step, reps=1)
            fl = model_flops(model, ids.numel(), True)
            print(f"forward+backward 2 x 128, {prec}: {sec:.2f} s, {ids.numel() / sec:.0f} tok/s, "
                  f"{fl / sec / 1e12:.4f} TFLOP/s")

    model.eval().requires_grad_(False)
    if "prefill" in args.only:
        for plen in (1500, 3000):
            ids = torch.randint(100, 20000, (1, plen))

            def run(ids=ids):
                with torch.no_grad():
                    model(input_ids=ids, use_cache=True, logits_to_keep=1)

            wall = profiled(run, args.rows, f"prefill 1 x {plen}")
            fl = model_flops(model, plen, False)
            print(f"prefill {plen}: {plen / wall:.0f} tok/s, {fl / wall / 1e12 / peak:.0%} of the matmul peak")

    if "decode" in args.only:
        from alignkit.generate.engine import HFEngine, SamplingParams

        engine = HFEngine(model, tok, batch_size=8)
        prompts = [f"Write one sentence about the number {i}." for i in range(8)]
        params = SamplingParams(max_new_tokens=32, temperature=0.0, min_new_tokens=32)

        def run():
            return engine.generate(prompts, params)

        wall = profiled(run, args.rows, "decode 8 x 32 greedy (min_new_tokens=32)")
        fwd_only = timed(lambda: model(input_ids=torch.randint(100, 20000, (8, 1)), use_cache=False), reps=5)
        print(f"decode: {8 * 32 / wall:.0f} new tok/s; {wall / 32 * 1000:.0f} ms per step of 8 rows "
              f"(a bare 8 x 1 forward without cache: {fwd_only * 1000:.0f} ms)")
        for rows in (16, 64):  # batching policy: decode throughput by batch size
            big = HFEngine(model, tok, batch_size=rows)
            ps = [f"Write one sentence about the number {i}." for i in range(rows // 4)]
            p4 = SamplingParams(max_new_tokens=16, temperature=1.0, min_new_tokens=16, n=4, seed=0)
            sec = timed(lambda big=big, ps=ps, p4=p4: big.generate(ps, p4), reps=1)
            print(f"decode batch {rows} rows ({rows // 4} prompts x n=4) x 16 tokens: {sec:.2f} s, "
                  f"{rows * 16 / sec:.0f} new tok/s, {sec / 16 * 1000:.0f} ms per step")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
