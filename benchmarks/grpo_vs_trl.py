#!/usr/bin/env python
"""alignkit GRPO (``alignkit rl``) vs TRL's ``GRPOTrainer``, side by side, in one invocation.

Both sides get the same model, the same held-out IFEval-format prompts (the demo's generator,
``alignkit.data.verifiable``) in the same order, ``n`` samples per
prompt, ``max_new_tokens``, temperature 1 (no top-k/top-p), beta as a k3 loss term, one optimizer step per
RL step (PPO clip 0.2, one epoch, one minibatch: TRL's ``num_iterations=1``), a token-level loss over the
whole step (TRL ``loss_type="dapo"``, alignkit ``ppo.loss_reduction: token``), group-std-scaled advantages,
no reward normalisation, the same precision and AdamW settings (constant LR, no warmup, no weight decay),
HF generation on both sides (no vLLM), gradient checkpointing off on both unless asked. The reward is
alignkit's built-in verifier on both sides (1 when the answer follows every instruction of the row,
strict, and finished on its own). Each side runs in its own subprocess (``common.run_worker``), so peak RSS is the child's own.

``--prompt-tokens N`` pads each question with CPython documentation text to about N rendered prompt
tokens (chat template included): 64 (default) for short prompts, 1024 for long ones.

Printed: s/step, steps/s, tokens/s (prompt + generated tokens of the step's samples, per second of the
whole step: generation, scoring, log-prob passes and update), peak RSS and their ratios, and each side's
step-0 loss (the samples differ -- each side draws its own -- so the step-0 losses agree only in kind: at
ratio 1 and KL 0 both are the token mean of -A). The sampled prompts of every step are compared.

Exit status: 0 ok; 1 the two sides saw different prompts; 2 bad arguments; 3 a run failed (its log is printed).

    .venv/bin/python benchmarks/grpo_vs_trl.py --precision bf16 --steps 4
    .venv/bin/python benchmarks/grpo_vs_trl.py --precision bf16 --steps 4 --prompt-tokens 1024
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from common import (
    RunFailed,
    add_shared_args,
    bench_main,
    doc_text,
    fmt_mb,
    maxrss_kb,
    median_after_first,
    pin_threads,
    run_worker,
    trl_common_args,
    trl_recorder,
)


def build_prompts(tok, count: int, prompt_tokens: int, seed: int) -> list[dict]:
    """``count`` held-out IFEval-format rows (``alignkit.data.verifiable``: the held-out split by key hash, so
    none is a demo training prompt), each question padded with documentation text to ~``prompt_tokens``
    rendered tokens (no padding when the bare question is already that long)."""
    from alignkit.data.verifiable import make_splits

    cut = doc_text(tok)

    def rendered(text: str) -> int:
        return len(tok.apply_chat_template([{"role": "user", "content": text}], tokenize=True,
                                           add_generation_prompt=True, return_dict=False))

    # IFEval prompts vary in length: take the held-out rows that fit the asked length first (in their
    # order), so short runs are ~prompt_tokens long; rows too long for it come after, unpadded
    _, pool = make_splits(0, 8 * count, seed=seed)
    fits = [r for r in pool if rendered(r["prompt"]) <= prompt_tokens]
    rows = (fits + [r for r in pool if rendered(r["prompt"]) > prompt_tokens])[:count]

    out = []
    for i, row in enumerate(rows):
        prompt = row["prompt"]
        framing = "{}\n\n" + prompt  # the passage, then the question
        room = prompt_tokens - rendered(framing.format(""))
        if rendered(prompt) < prompt_tokens and room > 0:
            passage = cut(997 * i, room)
            while rendered(framing.format(passage)) > prompt_tokens and room > 1:  # decode/encode drift
                room -= 1
                passage = cut(997 * i, room)
            prompt = framing.format(passage)
        out.append({**row, "prompt": prompt})
    return out


def worker_alignkit(spec: dict) -> dict:
    """``train_rl`` with the RL step timed and the prompts and tokens of every rollout recorded."""
    pin_threads(spec["threads"])
    from alignkit.config import load_config
    from alignkit.train import rl

    steps: list[dict] = []
    real_step, real_rollout = rl.rl_step, rl.rollout

    def rollout(engine, rows, indices, *args, **kw):
        samples = real_rollout(engine, rows, indices, *args, **kw)
        steps[-1]["prompts"] += [rows[s.prompt_index]["prompt"] for s in samples]
        steps[-1]["tokens"] += sum(len(s.prompt_ids) + len(s.response_ids) for s in samples)
        return samples

    def step(ctx):
        steps.append({"prompts": [], "tokens": 0, "start": time.perf_counter()})
        logs = real_step(ctx)
        steps[-1].update(end=time.perf_counter(), rss_kb=maxrss_kb())
        return logs

    rl.rl_step, rl.rollout = step, rollout
    cfg = load_config(rl.RLConfig, None, spec["overrides"])
    rl.train_rl(cfg)
    logs = [json.loads(x) for x in (Path(cfg.train.output_dir) / "metrics.jsonl").read_text().splitlines()]
    return {"steps": [{"loss": g["loss"], "reward": g["reward/mean"], "step_s": s["end"] - s["start"],
                       "tokens": s["tokens"], "rss_kb": s["rss_kb"], "prompts": s["prompts"]}
                      for g, s in zip(logs, steps, strict=True)]}


def worker_trl(spec: dict) -> dict:
    """TRL's GRPOTrainer on the same rows in alignkit's order; the reward records the prompts it scores."""
    pin_threads(spec["threads"])
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from alignkit.train.rl_rewards import verifiable_reward

    a = spec["args"]
    rows = [json.loads(line) for line in Path(spec["rows"]).read_text().splitlines()]
    tok = AutoTokenizer.from_pretrained(spec["model"])
    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32)  # fp32 master weights
    seen: list[list[str]] = []

    def reward(prompts, completions, completion_ids, row, **kw):
        seen.append([p[-1]["content"] for p in prompts])
        out = []
        for c, ids, r in zip(completions, completion_ids, row, strict=True):
            # as alignkit's finish_reason: "stop" unless cut by the token budget
            finished = len(ids) < a["max_new_tokens"] or (bool(ids) and ids[-1] == tok.eos_token_id)
            out.append(verifiable_reward(json.loads(r), c[-1]["content"], "stop" if finished else "length"))
        return out

    common = trl_common_args(spec)
    for key in ("max_length", "truncation_mode"):  # SFT/DPO-only fields
        common.pop(key)
    args = GRPOConfig(**common, gradient_checkpointing=a["gradient_checkpointing"], shuffle_dataset=False,
                      num_generations=a["n"], max_completion_length=a["max_new_tokens"], temperature=1.0,
                      top_p=1.0, top_k=0, beta=a["beta"], epsilon=0.2, loss_type="dapo", scale_rewards="group",
                      num_iterations=1, use_vllm=False, log_completions=False)
    recorder, timing, steps_logged = trl_recorder()
    # the IFEval row as one JSON column: its kwargs dicts differ in keys, which Arrow would widen with nulls
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}], "row": json.dumps(r)}
                              for r in rows])
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=data, processing_class=tok,
                          callbacks=[recorder])
    trainer.train()
    ends = [timing["train_start"], *timing["step_end"]]
    steps, before = [], 0
    for i, s in enumerate(sorted(steps_logged)):
        g = steps_logged[s]
        steps.append({"loss": g["loss"], "reward": g.get("reward"), "step_s": ends[i + 1] - ends[i],
                      "tokens": int(g["num_tokens"] - before), "rss_kb": timing["rss_kb"][i],
                      "prompts": seen[i] if i < len(seen) else []})
        before = g["num_tokens"]
    return {"steps": steps}


WORKERS = {"alignkit": worker_alignkit, "trl": worker_trl}


def alignkit_overrides(a, model: str, data: str, output_dir: str) -> list[str]:
    """``alignkit rl`` settings equal to the TRL side's (see the module docstring)."""
    per_step = a.prompts_per_step * a.n
    return [
        f"model.name_or_path={model}", f"model.gradient_checkpointing={str(a.gradient_checkpointing).lower()}",
        f"data.train={data}", f"rollout.prompts_per_step={a.prompts_per_step}", f"rollout.n={a.n}",
        f"rollout.max_new_tokens={a.max_new_tokens}", "rollout.temperature=1.0", "rollout.top_p=1.0",
        "rollout.top_k=0", f"rollout.batch_size={per_step}", "advantage.type=grpo", "advantage.scale_std=true",
        "critic=null", "kl.mode=loss", "kl.estimator=k3", f"kl.coef={a.beta}", "reward.type=verifier",
        "reward.verifier=verifiable", "reward.normalize=false", "reward.clip=null", "ppo.epochs=1",
        "ppo.num_minibatches=1", f"ppo.micro_batch_size={per_step}", "ppo.clip_eps=0.2",
        "ppo.loss_reduction=token", f"train.output_dir={output_dir}", f"train.seed={a.seed}",
        f"train.max_steps={a.steps}", f"train.lr={a.lr}", "train.weight_decay=0.0",
        f"train.adam_betas=[{a.adam_betas[0]}, {a.adam_betas[1]}]", f"train.adam_eps={a.adam_eps}",
        "train.schedule=constant", "train.warmup_steps=0",
        f"train.max_grad_norm={'null' if a.max_grad_norm is None else a.max_grad_norm}",
        f"train.precision={a.precision}", "train.log_every=1", "train.report_to=[]", "train.progress=false",
        "train.report=false",
    ]


def ordered_rows(a, rows: list[dict]) -> list[dict]:
    """The prompt rows in the order ``alignkit rl`` visits them (``step_indices``), for TRL's sequential sampler."""
    from alignkit.train.loop import step_indices

    return [rows[i] for s in range(a.steps) for i in step_indices(len(rows), s, a.prompts_per_step, a.seed)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="model name or HF dir (default: the embedded smollm2-135m-instruct)")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--prompts-per-step", type=int, default=4)
    p.add_argument("--n", type=int, default=4, help="samples per prompt (>= 2)")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--prompt-tokens", type=int, default=64, help="rendered prompt length to pad to (64 short, 1024 long)")
    p.add_argument("--beta", type=float, default=0.04, help="k3 KL loss coefficient on both sides")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="bf16")
    p.add_argument("--lr", type=float, default=1e-6)
    add_shared_args(p)
    a = p.parse_args(argv)
    for name in ("steps", "prompts_per_step", "max_new_tokens", "prompt_tokens", "threads"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if a.n < 2:
        p.error("--n must be >= 2 (GRPO compares the samples of a prompt)")
    if a.beta < 0:
        p.error("--beta must be >= 0")
    return bench_main(p, a, WORKERS, "grpo_vs_trl.", run)


def run(a, workdir: Path, model: str) -> int:
    import trl

    from alignkit.models import load_tokenizer

    tok = load_tokenizer(model)
    rows = build_prompts(tok, a.steps * a.prompts_per_step, a.prompt_tokens, a.seed)
    data = workdir / "prompts.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    trl_path = workdir / "trl_rows.jsonl"
    trl_path.write_text("".join(json.dumps(r) + "\n" for r in ordered_rows(a, rows)))
    lengths = [len(tok.apply_chat_template([{"role": "user", "content": r["prompt"]}], tokenize=True,
                                           add_generation_prompt=True, return_dict=False)) for r in rows]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": str(a.threads), "MKL_NUM_THREADS": str(a.threads),
           "ALIGNKIT_HOME": str(workdir / "alignkit_home"), "HF_DATASETS_CACHE": str(workdir / "hf_datasets")}
    load_before = os.getloadavg()
    base = {"threads": a.threads, "model": model}
    trl_args = {**vars(a), "batch_size": a.prompts_per_step * a.n, "max_length": None}
    try:
        ak_res, ak_proc = run_worker("alignkit", {**base, "name": "alignkit", "overrides": alignkit_overrides(
            a, model, str(data), str(workdir / "alignkit"))}, workdir, env, script=__file__)
        tr_res, tr_proc = run_worker("trl", {**base, "name": "trl", "rows": str(trl_path), "args": trl_args,
                                            "output_dir": str(workdir / "trl")}, workdir, env, script=__file__)
    except RunFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    load_after = os.getloadavg()
    ak, tr = ak_res["steps"], tr_res["steps"]
    same_prompts = len(ak) == len(tr) and all(sorted(x["prompts"]) == sorted(y["prompts"])
                                              for x, y in zip(ak, tr, strict=True))
    out: list[str] = []
    w = out.append
    w(f"alignkit rl (GRPO) vs TRL {trl.__version__} GRPOTrainer — model {Path(model).name}, {a.steps} steps x "
      f"{a.prompts_per_step} prompts x {a.n} samples, {a.max_new_tokens} new tokens, prompts "
      f"{min(lengths)}-{max(lengths)} tokens (--prompt-tokens {a.prompt_tokens}), beta {a.beta} (k3 loss), "
      f"{a.precision}, lr {a.lr} constant, token-level loss, grad ckpt {'on' if a.gradient_checkpointing else 'off'}, "
      f"{a.threads} threads")
    w(f"load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f} on {os.cpu_count()} CPUs "
      "(compare ratios within this run)")
    w("")
    hdr = f"{'step':>4} {'loss alignkit':>14} {'loss TRL':>12} {'reward ak':>10} {'reward TRL':>10} " \
          f"{'s ak':>7} {'s TRL':>7} {'tok ak':>7} {'tok TRL':>7}"
    w(hdr)
    w("-" * len(hdr))
    for i in range(min(len(ak), len(tr))):
        w(f"{i:>4} {ak[i]['loss']:>14.6f} {tr[i]['loss']:>12.6f} {ak[i]['reward']:>10.3f} "
          f"{(tr[i]['reward'] if tr[i]['reward'] is not None else float('nan')):>10.3f} {ak[i]['step_s']:>7.2f} "
          f"{tr[i]['step_s']:>7.2f} {ak[i]['tokens']:>7} {tr[i]['tokens']:>7}")
    w("")
    w(f"step-0 loss: alignkit {ak[0]['loss']:.6f}, TRL {tr[0]['loss']:.6f} (own samples on each side: "
      "both are the token mean of -A at ratio 1, KL 0)")
    w("prompts: every step sampled the same prompts on both sides" if same_prompts
      else "prompts MISMATCH: the two sides sampled different prompts")
    w("")

    def speed(steps):
        med = median_after_first([s["step_s"] for s in steps])
        later = steps[1:] or steps
        return med, sum(s["tokens"] for s in later) / sum(s["step_s"] for s in later)

    (ak_med, ak_tps), (tr_med, tr_tps) = speed(ak), speed(tr)
    w(f"{'':28} {'alignkit':>12} {'TRL':>12} {'alignkit/TRL':>13}")
    w(f"{'s/step (median, steps>=1)':28} {ak_med:>12.2f} {tr_med:>12.2f} {ak_med / tr_med:>13.2f}")
    w(f"{'steps/s':28} {1 / ak_med:>12.3f} {1 / tr_med:>12.3f} {tr_med / ak_med:>13.2f}")
    w(f"{'tokens/s (steps>=1)':28} {ak_tps:>12.1f} {tr_tps:>12.1f} {ak_tps / tr_tps:>13.2f}")
    w(f"{'peak RSS, whole process':28} {fmt_mb(ak_proc['peak_rss_kb']):>12} {fmt_mb(tr_proc['peak_rss_kb']):>12} "
      f"{ak_proc['peak_rss_kb'] / tr_proc['peak_rss_kb']:>13.2f}")
    w(f"{'wall time, whole process':28} {ak_proc['wall_s']:>11.1f}s {tr_proc['wall_s']:>11.1f}s "
      f"{ak_proc['wall_s'] / tr_proc['wall_s']:>13.2f}")
    w(f"alignkit vs TRL: steps/s x{tr_med / ak_med:.2f}, tokens/s x{ak_tps / tr_tps:.2f}, "
      f"peak RSS x{ak_proc['peak_rss_kb'] / tr_proc['peak_rss_kb']:.2f} (issue 20 target: >= 3x steps/s, <= 0.6x RSS)")
    w("(alignkit's whole-process figures include its final checkpoint and HF export; TRL saves nothing)")
    print("\n".join(out))
    if a.json_out:
        Path(a.json_out).write_text(json.dumps({
            "args": vars(a), "prompt_lengths": lengths, "alignkit": {**ak_res, **ak_proc},
            "trl": {**tr_res, **tr_proc}, "same_prompts": same_prompts, "load": [load_before, load_after],
            "steps_per_s_ratio": tr_med / ak_med, "tokens_per_s_ratio": ak_tps / tr_tps,
            "rss_ratio": ak_proc["peak_rss_kb"] / tr_proc["peak_rss_kb"]}, indent=1))
    return 0 if same_prompts else 1


if __name__ == "__main__":
    sys.exit(main())
