#!/usr/bin/env python
"""Judge scoring throughput on long prompts that share a prefix, against the forward-pass ceiling.

LongReward-style judging: for each document, several judge calls whose prompts share the rating
instructions and the document (the prefix) and differ in the answer and dimension being rated (the
suffix). With the defaults the prompts are 1.6k to 2.7k tokens and ~85% of each is the shared prefix.

One invocation, one model object, greedy decoding of a short verdict (``--max-new-tokens``):

* ``ceiling``    — the model's prefill rate: one forward (no grad, KV cache kept, last logits only)
  over a single sequence of ``--ceiling-tokens`` tokens, best of 2. Prompt tokens/s of an ideal
  prefill that wastes nothing on padding or Python.
* ``backend``    — the judge's real path: ``LocalBackend.call`` from one thread per call (the
  judge's thread pool), merged into batches by ``BatchingQueue``; prefix reuse on.
* ``engine``     — all calls handed to ``HFEngine.generate`` at once (what the queue does when every
  call is in flight together), prefix reuse on (``min_shared_prefix=64``, the default).
* ``no-reuse``   — the same, with prefix reuse off (``min_shared_prefix=0``): every prompt prefilled whole.

For each it prints calls/s, prompt tokens/s (tokens of all prompts as a judge bills them: shared
tokens counted once per call) and that rate as a fraction of the ceiling (the issue's target is
>= 30%; with prefix reuse it can exceed 100%, since shared tokens are computed once). The verdicts
of ``engine`` and ``no-reuse`` must be identical (greedy): exit status 1 otherwise.

    flock /tmp/alignkit-heavy.lock .venv/bin/python benchmarks/judge_throughput.py --threads 2
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ThreadPoolExecutor

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DIMENSIONS = ["helpfulness", "logicality", "faithfulness", "completeness", "clarity", "relevance"]


def judge_prompts(tok, doc_tokens: list[int], calls_per_doc: int, answer_tokens: int) -> list[list[dict]]:
    """Chat prompts: per document, ``calls_per_doc`` calls sharing instructions + document."""
    from common import doc_text

    cut = doc_text(tok)
    out = []
    for d, n in enumerate(doc_tokens):
        head = ("You are a strict grader. Read the document, then rate the answer on the named dimension "
                "from 1 to 10. Reply with the number only.\n\nDocument:\n" + cut(50_000 * d, n) + "\n\n")
        for c in range(calls_per_doc):
            answer = cut(50_000 * d + 7919 * (c + 1), answer_tokens + 40 * (c % 3))
            dim = DIMENSIONS[c % len(DIMENSIONS)]
            out.append([{"role": "user", "content": f"{head}Answer:\n{answer}\n\nDimension: {dim}. Score:"}])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--doc-tokens", type=int, nargs="+", default=[1400, 2400], help="document length per document")
    ap.add_argument("--calls-per-doc", type=int, default=6)
    ap.add_argument("--answer-tokens", type=int, default=160, help="answer length in the suffix (+0/40/80)")
    ap.add_argument("--max-new-tokens", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=8, help="engine rows per batch")
    ap.add_argument("--ceiling-tokens", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    from alignkit.generate.engine import HFEngine, SamplingParams
    from alignkit.judge.backends import LocalBackend

    torch.set_num_threads(args.threads)
    load = os.getloadavg()
    engine = HFEngine.from_pretrained(args.model, dtype="float32", batch_size=args.batch_size)
    model, tok = engine.model, engine.tokenizer
    prompts = judge_prompts(tok, args.doc_tokens, args.calls_per_doc, args.answer_tokens)
    lens = [len(engine.encode(p)) for p in prompts]
    total = sum(lens)
    params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=0.0)
    print(f"torch {torch.__version__}, {args.threads} threads, load average {load}; {len(prompts)} judge calls, "
          f"prompts {min(lens)}-{max(lens)} tokens ({total} in all), {len(args.doc_tokens)} documents x "
          f"{args.calls_per_doc} calls sharing a prefix; greedy, max_new_tokens {args.max_new_tokens}")

    ids = torch.randint(100, 20000, (1, args.ceiling_tokens))
    with torch.inference_mode():
        model(input_ids=ids[:, :64], use_cache=True, logits_to_keep=1)  # warm-up
        best = float("inf")
        for _ in range(2):
            t = time.perf_counter()
            model(input_ids=ids, use_cache=True, logits_to_keep=1)
            best = min(best, time.perf_counter() - t)
    ceiling = args.ceiling_tokens / best
    print(f"{'ceiling':>9}: one 1 x {args.ceiling_tokens} prefill in {best:.2f} s = {ceiling:.0f} prompt tok/s")

    def report(name: str, sec: float) -> None:
        print(f"{name:>9}: {sec:.2f} s, {len(prompts) / sec:.3f} calls/s, {total / sec:.0f} prompt tok/s "
              f"= {total / sec / ceiling:.0%} of the ceiling (target >= 30%)")

    backend = LocalBackend(engine)
    t = time.perf_counter()
    with ThreadPoolExecutor(len(prompts)) as pool:
        answers = list(pool.map(lambda m: backend.call(m, args.max_new_tokens, 0.0, None), prompts))
    report("backend", time.perf_counter() - t)
    backend.close()

    t = time.perf_counter()
    reuse = engine.generate(prompts, params)
    report("engine", time.perf_counter() - t)

    engine.min_shared_prefix = 0
    t = time.perf_counter()
    plain = engine.generate(prompts, params)
    report("no-reuse", time.perf_counter() - t)

    same = [a.completions[0].token_ids == b.completions[0].token_ids for a, b in zip(reuse, plain, strict=True)]
    same_backend = sum(a.text == r.completions[0].text for a, r in zip(answers, reuse, strict=True))
    print(f"greedy verdicts identical with and without prefix reuse: {sum(same)}/{len(same)}; backend == engine: "
          f"{same_backend}/{len(same)}; load average after {os.getloadavg()}")
    return 0 if all(same) else 1


if __name__ == "__main__":
    raise SystemExit(main())
