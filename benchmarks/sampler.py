#!/usr/bin/env python
"""The engine's top-p sampler: full-vocabulary sort (the old path) vs top-k candidates (``candidates``).

    .venv/bin/python benchmarks/sampler.py                 # 64 rows x 49,152 vocabulary, 1 thread
    .venv/bin/python benchmarks/sampler.py --rows 16 --scale 3

Logits are random normals times ``--scale`` (larger = more peaked, like a trained model's next-token
distribution; 3 gives nuclei of thousands of tokens). Prints ms per call of each side and checks that
the kept sets agree (up to one boundary token per row, float rounding of the cumulative sum).
"""

from __future__ import annotations

import argparse
import time

import torch


def full_sort_nucleus(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    probs = torch.softmax(logits, dim=-1)
    sorted_p, sorted_idx = probs.sort(dim=-1, descending=True)
    drop = (sorted_p.cumsum(-1) - sorted_p) >= top_p
    return torch.zeros_like(probs).scatter(-1, sorted_idx, sorted_p.masked_fill(drop, 0.0))


def timed(fn, reps: int) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps * 1e3


def main() -> int:
    from alignkit.generate.engine import candidates

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=49152)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--temperature", type=float, default=0.9)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    for scale in (3.0, 6.0, 10.0):
        logits = torch.randn(args.rows, args.vocab, generator=gen) * scale / args.temperature
        old = timed(lambda lg=logits: full_sort_nucleus(lg, args.top_p), args.reps)
        new = timed(lambda lg=logits: candidates(lg, top_p=args.top_p), args.reps)
        probs, ids = candidates(logits, top_p=args.top_p)
        kept = torch.zeros_like(logits).scatter(-1, ids, probs) > 0
        diff = int((kept != (full_sort_nucleus(logits, args.top_p) > 0)).sum(-1).max())
        print(f"scale {scale:>4}: full sort {old:7.1f} ms, top-k candidates {new:6.1f} ms (x{old / new:.1f}); "
              f"kept tokens/row {kept.sum(-1).float().mean():.0f}; max kept-set difference per row {diff}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
