"""AdamW step time for SmolLM2-135M's parameter shapes: torch's ``foreach`` vs ``fused`` implementation.

    .venv/bin/python benchmarks/optimizer_step.py --threads 2

``alignkit.train.loop.build_optimizer`` uses the fused kernel; this shows what it saves per optimizer
step, in one invocation (both sides alternate, best of ``--reps``), and that the updates agree.
"""

from __future__ import annotations

import argparse
import os

import torch
from common import best_seconds

# SmolLM2-135M: tied embedding / lm-head, then 30 layers of q, k, v, o, gate, up, down (out, in), norms.
SHAPES = [(49152, 576)] + [(576, 576), (192, 576), (192, 576), (576, 576), (1536, 576), (1536, 576), (576, 1536),
                           (576,), (576,)] * 30 + [(576,)]


def step_ms(impl: str, reps: int) -> float:
    params = [torch.nn.Parameter(torch.randn(*s)) for s in SHAPES]
    for p in params:
        p.grad = torch.randn_like(p)
    opt = torch.optim.AdamW(params, lr=1e-5, **{impl: True})
    return best_seconds(opt.step, reps) * 1000  # the untimed first step allocates the moment buffers


def max_update_diff(steps: int = 5) -> float:
    torch.manual_seed(0)
    a = [torch.nn.Parameter(torch.randn(300, 300)) for _ in range(3)]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    grads = [torch.randn(300, 300) for _ in range(3)]
    oa, ob = torch.optim.AdamW(a, lr=1e-3, foreach=True), torch.optim.AdamW(b, lr=1e-3, fused=True)
    for _ in range(steps):
        for ps in (a, b):
            for p, g in zip(ps, grads, strict=True):
                p.grad = g.clone()
        oa.step()
        ob.step()
    return max(float((x - y).detach().abs().max()) for x, y in zip(a, b, strict=True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    n = sum(torch.Size(s).numel() for s in SHAPES)
    times = {impl: min(step_ms(impl, args.reps) for _ in range(2)) for impl in ("foreach", "fused")}
    print(f"AdamW step, {n / 1e6:.1f}M fp32 parameters in {len(SHAPES)} tensors, {args.threads} threads, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"foreach {times['foreach']:.0f} ms, fused {times['fused']:.0f} ms: x{times['foreach'] / times['fused']:.2f}; "
          f"max |param difference| after 5 steps (300x300 x3, lr 1e-3): {max_update_diff():.1e}")


if __name__ == "__main__":
    main()
