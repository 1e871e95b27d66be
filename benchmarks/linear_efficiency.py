"""How close to the matmul peak SmolLM2-135M's own linear layers get, forward + backward.

    .venv/bin/python benchmarks/linear_efficiency.py --threads 2

For one decoder layer's seven ``F.linear`` (q, k, v, o, gate, up, down, in the model's (out, in)
weight layout) at 512, 1,130 and 2,330 tokens (the short-pair, packed short-pair and long-pair step
sizes of ``dpo_vs_trl.py``), forward + backward (input and weight gradients: 6 FLOPs per
multiply-add), as a fraction of ``common.matmul_peak`` measured in the same invocation; and the
lm-head + float32 log-softmax, forward + backward, at 800 response positions. This is the ceiling for
the 6N training-throughput figure: the gap between it and a whole training step is the work and
overhead outside the linear layers.
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.nn.functional as F
from common import best_seconds, matmul_peak

HIDDEN, INTER, KV, VOCAB = 576, 1536, 192, 49152
LINEARS = [(HIDDEN, HIDDEN), (KV, HIDDEN), (KV, HIDDEN), (HIDDEN, HIDDEN), (INTER, HIDDEN), (INTER, HIDDEN),
           (HIDDEN, INTER)]  # (out, in)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    peak = matmul_peak("fp32", args.threads, reps=16)
    print(f"fp32 F.linear peak {peak:.3f} TFLOP/s, {args.threads} threads, load average {os.getloadavg()[0]:.2f}")
    for m in (512, 1130, 2330):
        x = {HIDDEN: torch.randn(m, HIDDEN, requires_grad=True), INTER: torch.randn(m, INTER, requires_grad=True)}
        ws = [torch.randn(o, i, requires_grad=True) for o, i in LINEARS]

        def layer(x=x, ws=ws):
            for w in ws:
                y = F.linear(x[w.shape[1]], w)
                y.backward(torch.ones_like(y))

        s = best_seconds(layer, args.reps)
        tflops = 6 * m * sum(o * i for o, i in LINEARS) / s / 1e12
        print(f"{m:5d} tokens: one layer's linears forward+backward {s * 1000:6.1f} ms, {tflops:.3f} TFLOP/s "
              f"= {tflops / peak:.0%} of the peak")
    h = torch.randn(800, HIDDEN, requires_grad=True)
    head = torch.randn(VOCAB, HIDDEN, requires_grad=True)

    def lm_head():
        F.linear(h, head).float().log_softmax(-1)[:, 0].sum().backward()

    print(f"lm-head + float32 log-softmax forward+backward, 800 response positions: {best_seconds(lm_head, 2):.2f} s")


if __name__ == "__main__":
    main()
