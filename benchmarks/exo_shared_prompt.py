#!/usr/bin/env python
"""EXO on K-way rows with long prompts: shared-prompt forward vs K separate sequences, one invocation.

Both sides run the same EXO training step (``alignkit.train.preference.PreferenceObjective``: policy
forward + backward of the summed response log-probs, EXO loss against fixed reference log-probs) on
the same rows and the same model state; only ``batching.shared_prompt`` / ``batching.pack`` differ.
The losses and gradient norms must agree (fp32: |dloss| <= 1e-5 relative); the script prints the
seconds per step of each side, the speed-up, and the matmul peak fraction of each.

    flock /tmp/alignkit-heavy.lock .venv/bin/python benchmarks/exo_shared_prompt.py
    flock /tmp/alignkit-heavy.lock .venv/bin/python benchmarks/exo_shared_prompt.py --prompt-tokens 2048 --k 4 --steps 2
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402


def rows(tok, n: int, prompt_tokens: int, completion_tokens: int, k: int, seed: int = 0):
    from alignkit.data.tokenize import TokenizedExample

    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        prompt = torch.randint(100, 20000, (prompt_tokens,), generator=g).tolist()
        comps = [torch.randint(100, 20000, (completion_tokens - 9 * j,), generator=g).tolist() + [tok.eos_token_id]
                 for j in range(k)]
        out.append(TokenizedExample(i, prompt, comps, [float(j) for j in range(k)]))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--prompt-tokens", type=int, default=2048)
    ap.add_argument("--completion-tokens", type=int, default=128)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--rows", type=int, default=1, help="prompts per step")
    ap.add_argument("--steps", type=int, default=2, help="timed steps per side")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps per side before them")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from alignkit.config import load_config
    from alignkit.models import load_causal_lm, load_tokenizer
    from alignkit.train.preference import PreferenceConfig, PreferenceObjective, make_collate
    from alignkit.train.run import LogpsForward, forward_logps

    sys_load = os.getloadavg()
    a = torch.randn(2048, 576)
    b = torch.randn(576, 1536)
    peak = 0.0
    for _ in range(6):
        t = time.perf_counter()
        a @ b
        peak = max(peak, 2 * 2048 * 576 * 1536 / (time.perf_counter() - t) / 1e12)
    tok = load_tokenizer(args.model)
    model = load_causal_lm(args.model, trainable=True)
    n_params = sum(p.numel() for name, p in model.named_parameters() if "embed" not in name)
    fwd = LogpsForward(model)
    exs = rows(tok, args.rows, args.prompt_tokens, args.completion_tokens, args.k)
    with torch.no_grad():  # reference = the initial policy (step 0 of a real run: log-ratios 0, live gradients)
        ref_cfg = load_config(PreferenceConfig, None, ["data.train=unused.jsonl", "loss.type=exo"])
        ref = forward_logps(fwd, make_collate(ref_cfg.batching, tok.pad_token_id, args.k)(exs))[0]
    print(f"torch {torch.__version__}, {args.threads} threads, load average {sys_load}, fp32 matmul peak "
          f"{peak:.3f} TFLOP/s; {args.rows} prompt(s) x {args.prompt_tokens} tokens, K={args.k} completions "
          f"of ~{args.completion_tokens} tokens")
    results = {}
    for name, shared in (("separate", False), ("shared", True)):
        cfg = load_config(PreferenceConfig, None, ["data.train=unused.jsonl", "loss.type=exo",
                                                   f"batching.shared_prompt={shared}", f"batching.pack={shared}"])
        collate_fn = make_collate(cfg.batching, tok.pad_token_id, args.k)
        batch = {**collate_fn(exs), "ref_logps": ref}
        objective = PreferenceObjective(cfg, pairs=False)
        times, losses, norms = [], [], []
        for step in range(args.warmup + args.steps):
            model.zero_grad(set_to_none=True)
            t = time.perf_counter()
            loss, _ = objective(fwd, batch)
            loss.backward()
            elapsed = time.perf_counter() - t
            if step >= args.warmup:
                times.append(elapsed)
            losses.append(float(loss.detach()))
            norms.append(float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))))
        tokens = int(batch["input_ids"].numel())  # positions computed, padding included
        sec = min(times)
        flops = 6 * n_params * tokens
        results[name] = (sec, losses[0], norms[0])
        print(f"{name:>8}: input {tuple(batch['input_ids'].shape)}, {sec:.2f} s/step (best of {args.steps}), "
              f"loss {losses[0]:.6f}, grad norm {norms[0]:.6f}, {flops / sec / 1e12:.3f} TFLOP/s "
              f"= {flops / sec / 1e12 / peak:.0%} of the fp32 matmul peak (6N x positions computed)")
    (s_sec, s_loss, s_norm), (h_sec, h_loss, h_norm) = results["separate"], results["shared"]
    print(f"speed-up shared / separate: x{s_sec / h_sec:.2f} (target >= K/2 = {args.k / 2:.1f}); "
          f"|dloss| {abs(s_loss - h_loss):.2e}, |dgrad norm| {abs(s_norm - h_norm):.2e}; load average {os.getloadavg()}")
    return 0 if abs(s_loss - h_loss) <= 1e-5 * max(1.0, abs(s_loss)) and abs(s_norm - h_norm) <= 1e-4 * s_norm else 1


if __name__ == "__main__":
    raise SystemExit(main())
