"""GRPO vs PPO (critic + GAE) vs offline DPO vs EXO from one start model at a matched number of sampled
responses, with the verifier reward on verifiable-instruction prompts: held-out pass rate and KL to the
start model, plotted as a reward–KL frontier.

    export OMP_NUM_THREADS=1
    flock /tmp/alignkit-heavy.lock timeout 600 .venv/bin/python experiments/rl_compare.py \
        --start /tmp/lead/demo64/sft --work /tmp/s3rl/work --arms grpo_n4
    ... (one locked invocation per arm: ppo_n4, offline (samples + dpo + exo), ...)
    .venv/bin/python experiments/rl_compare.py --start ... --work /tmp/s3rl/work --report   # runs nothing

Arms (every one starts from ``--start`` and sees the same ``--prompts`` training prompts):

* ``grpo_n{N}`` / ``ppo_n{N}``: ``alignkit rl`` with ``configs/rl_grpo_smollm2.yaml`` /
  ``configs/rl_ppo_smollm2.yaml``, scaled down: ``--steps`` RL steps x ``--prompts-per-step`` prompts x N
  samples (one pass over the training prompts), ``--max-new-tokens`` per sample, ``--lr``;
* ``dpo`` / ``exo``: N=4 samples per training prompt from the start model at the RL sampling settings
  (temperature 1, same token budget), verified; DPO (``configs/dpo_smollm2.yaml``) on the pairs of
  :mod:`alignkit.pipelines.verifiable_prefs`, EXO (``configs/exo_kway_smollm2.yaml``) on the K-way rows
  from the same samples; 2 epochs, 4 prompts per optimizer step, ``--lr``.

Every final model is measured the same way (:func:`evaluate`): the greedy verifier pass rate on the
held-out prompts (64 new tokens) and the mean per-sequence k1 / k3 KL to the start model on one sampled
answer per held-out prompt (:func:`alignkit.evals.policy_kl.sampled_kl`), with that sample's pass rate.

Resumable: each stage writes its own file under ``--work`` and is skipped when the file exists; an RL arm
stopped by ``timeout`` (SIGTERM) checkpoints and resumes from its checkpoint on the next invocation.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
OFFLINE = ("dpo", "exo")


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def _write_json(path: Path, obj: Any) -> None:
    from alignkit.atomic import write_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(obj, indent=1, default=str) + "\n")


def _write_jsonl(path: Path, rows: list[dict]) -> str:
    from alignkit.atomic import write_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return str(path)


def prompts(args) -> tuple[Path, Path]:
    """The training and held-out prompt files (the demo's hash split: held-out prompts never train)."""
    from alignkit.data.verifiable import make_splits

    work = Path(args.work)
    train_path, held_path = work / "prompts" / "train.jsonl", work / "prompts" / "heldout.jsonl"
    if not held_path.exists():
        train, held = make_splits(args.prompts, args.heldout, seed=args.seed)
        _write_jsonl(train_path, train)
        _write_jsonl(held_path, held)
    return train_path, held_path


# ------------------------------------------------------------------------------------ evaluation
def evaluate(model_dir: str, start_dir: str, held_path: Path, args) -> dict[str, Any]:
    """Greedy held-out pass rate and sampled KL (+ the samples' pass rate) to the start model."""
    from alignkit.evals.policy_kl import sampled_kl
    from alignkit.generate.engine import HFEngine, SamplingParams
    from alignkit.models import load_causal_lm, load_tokenizer
    from alignkit.pipelines.verifiable_prefs import pass_rate, sample_passes

    rows = _read_jsonl(held_path)
    t0 = time.perf_counter()
    policy, tok = load_causal_lm(model_dir), load_tokenizer(model_dir)
    reference = policy if Path(model_dir).resolve() == Path(start_dir).resolve() else load_causal_lm(start_dir)
    greedy = pass_rate(HFEngine(policy, tok, batch_size=args.gen_batch),
                       rows, SamplingParams(max_new_tokens=args.eval_max_new_tokens, temperature=0.0))
    kl = sampled_kl(policy, reference, tok, rows, n=args.kl_samples, max_new_tokens=args.eval_max_new_tokens,
                    seed=args.seed + 1, batch_size=args.gen_batch)
    passed = [sample_passes(s.text, s.finish_reason, rows[s.prompt_index]) for s in kl.pop("samples")]
    return {"model": model_dir, "heldout_n": greedy["n"], "greedy_pass_rate": greedy["pass_rate"],
            "greedy_passed": greedy["passed"], "greedy_truncated": greedy["truncated"],
            "greedy_by_instruction": greedy["instructions"], "sampled_pass_rate": sum(passed) / len(passed), **kl,
            "eval_s": round(time.perf_counter() - t0, 1)}


def evaluated(name: str, model_dir: str, args) -> dict[str, Any]:
    """``evaluate`` once per arm, cached in ``<work>/<name>/eval.json``."""
    path = Path(args.work) / name / "eval.json"
    if not path.exists():
        _write_json(path, evaluate(model_dir, args.start, prompts(args)[1], args))
    return json.loads(path.read_text())


# ------------------------------------------------------------------------------------- RL arms
def rl_overrides(kind: str, n: int, out: Path, args) -> list[str]:
    train_path, _ = prompts(args)
    settings = {
        "model.name_or_path": args.start, "data.train": train_path, "data.eval": "null",
        "rollout.prompts_per_step": args.prompts_per_step, "rollout.n": n,
        "rollout.max_new_tokens": args.max_new_tokens, "rollout.batch_size": args.gen_batch,
        "train.max_steps": args.steps, "train.lr": args.lr, "train.warmup_steps": 0, "train.seed": args.seed,
        "train.precision": "fp32", "train.output_dir": out, "train.save_every": 1, "train.keep_checkpoints": 1,
        "train.report_to": "[]", "train.progress": "false", "train.report": "false",
    }
    return [f"{k}={v}" for k, v in settings.items()]


def run_rl(name: str, args) -> dict[str, Any] | None:
    """Train (or resume) an RL arm; None when it was interrupted (run again to resume)."""
    from alignkit.config import load_config
    from alignkit.train import checkpoint as ckpt
    from alignkit.train.rl import RLConfig, train_rl

    kind, n = name.split("_n")
    out = Path(args.work) / name / "run"
    done = out / "done.json"
    if not done.exists():
        cfg = load_config(RLConfig, REPO / f"configs/rl_{kind}_smollm2.yaml", rl_overrides(kind, int(n), out, args))
        summary = train_rl(cfg, resume=ckpt.latest_checkpoint(out) is not None)
        if summary["interrupted"]:
            return None
        logs = _read_jsonl(out / "metrics.jsonl")
        per_step = cfg.rollout.prompts_per_step * cfg.rollout.n
        _write_json(done, {
            "arm": name, "steps": summary["steps"], "optimizer_steps": summary["optimizer_steps"],
            "sampled_responses": per_step * summary["steps"],
            "sampled_tokens": round(sum(x["response/length_mean"] * per_step for x in logs)),
            "train_s": round(sum(x["time/step_s"] for x in logs), 1),
            "generate_s": round(sum(x["time/generate_s"] for x in logs), 1),
            "train_reward": [x["reward/mean"] for x in logs], "train_kl_k1": [x["kl/ref_k1_per_sample"] for x in logs],
            "reward_failures": summary["reward_failures"]})
        shutil.rmtree(out / "checkpoints", ignore_errors=True)  # only for resuming; the model is exported
    return json.loads(done.read_text())


# -------------------------------------------------------------------------------- offline arms
def offline_data(args) -> dict[str, Any]:
    """N=4 samples per training prompt from the start model (the RL sampling settings), verified;
    the pairs and K-way rows of :func:`alignkit.pipelines.verifiable_prefs.build_pairs`."""
    import torch

    from alignkit.generate.engine import SamplingParams, make_engine
    from alignkit.pipelines.verifiable_prefs import build_pairs, score_samples

    d = Path(args.work) / "offline"
    if not (d / "data.json").exists():
        rows = _read_jsonl(prompts(args)[0])
        t0 = time.perf_counter()
        engine = make_engine(args.start, "hf", batch_size=args.gen_batch)
        torch.manual_seed(args.seed)
        params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=1.0, n=args.offline_k)
        scored = score_samples(engine, rows, params)
        pairs, kway, stats = build_pairs(scored)
        _write_jsonl(d / "samples.jsonl", scored)
        _write_jsonl(d / "pairs.jsonl", pairs)
        _write_jsonl(d / "kway.jsonl", kway)
        _write_json(d / "data.json", {
            "sampled_responses": stats["samples"],
            "sampled_tokens": sum(s["tokens"] for item in scored for s in item["samples"]),
            "sample_s": round(time.perf_counter() - t0, 1), "stats": stats})
    return json.loads((d / "data.json").read_text())


def run_offline(name: str, args) -> dict[str, Any]:
    from alignkit.config import load_config
    from alignkit.train.preference import PreferenceConfig, train_preference

    data = offline_data(args)
    out = Path(args.work) / name / "run"
    done = out / "done.json"
    if not done.exists():
        d = Path(args.work) / "offline"
        config, rows, batch = {"dpo": ("dpo_smollm2.yaml", d / "pairs.jsonl", 4),
                               "exo": ("exo_kway_smollm2.yaml", d / "kway.jsonl", 4)}[name]
        overrides = [f"model.name_or_path={args.start}", f"data.train={rows}", "data.eval_fraction=0",
                     f"train.output_dir={out}", "train.max_steps=null", "train.epochs=2",
                     f"train.batch_size={batch}", "train.grad_accum=1", f"train.lr={args.lr}",
                     "train.warmup_steps=0", "train.save_every=null", "train.precision=fp32",
                     f"train.seed={args.seed}", "train.report_to=[]"]
        t0 = time.perf_counter()
        summary = train_preference(load_config(PreferenceConfig, REPO / "configs" / config, overrides))
        _write_json(done, {"arm": name, "optimizer_steps": summary["steps"], "rows": summary["data"].get("kept"),
                           "sampled_responses": data["sampled_responses"], "sampled_tokens": data["sampled_tokens"],
                           "train_s": round(data["sample_s"] + time.perf_counter() - t0, 1),
                           "final_loss": summary["final_loss"]})
    return json.loads(done.read_text())


def run_arm(name: str, args) -> dict[str, Any] | None:
    """Train and evaluate one arm (cached); None when an RL run was interrupted. ``start``: the start model."""
    if name == "start":
        return {"arm": name, **evaluated(name, args.start, args)}
    train = run_offline(name, args) if name in OFFLINE else run_rl(name, args)
    if train is None:
        return None
    model_dir = str(Path(args.work) / name / "run")
    return {"arm": name, **train, **evaluated(name, model_dir, args)}


# ------------------------------------------------------------------------------------- report
def binomial_se(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 0.0) / n) if n else math.nan


def plot_frontier(start: dict, arms: list[dict], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, key, title in ((axes[0], "greedy_pass_rate", "held-out greedy pass rate"),
                           (axes[1], "sampled_pass_rate", "held-out sampled (T=1) pass rate")):
        for r in [{"arm": "start", **start}, *arms]:
            ax.errorbar(r["k1_mean"], r[key], xerr=r.get("k1_sem") or 0, yerr=binomial_se(r[key], r["heldout_n"]),
                        fmt="o", capsize=3, label=r["arm"])
            ax.annotate(r["arm"], (r["k1_mean"], r[key]), textcoords="offset points", xytext=(5, 5), fontsize=8)
        ax.set_xlabel("KL(policy || start), k1 per sequence (nats, held-out samples)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    for r in arms:
        if r.get("train_kl_k1"):
            axes[2].plot(r["train_kl_k1"], r["train_reward"], marker="o", ms=3, label=r["arm"])
    axes[2].set_xlabel("k1 to the reference per sample (training rollouts)")
    axes[2].set_title("RL arms per step: training-batch reward vs KL", fontsize=10)
    axes[2].grid(alpha=0.3)
    axes[2].legend(fontsize=8)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


ROW_KEYS = ("greedy_pass_rate", "sampled_pass_rate", "k1_mean", "k1_sem", "k3_mean", "k3_sem",
            "sampled_responses", "sampled_tokens", "optimizer_steps", "train_s")


def table(start: dict, arms: list[dict]) -> list[str]:
    lines = ["| arm | greedy pass (held-out) | sampled pass | KL k1 ± sem | KL k3 ± sem | sampled responses | "
             "sampled tokens | optimizer steps | train wall s |", "| --- " * 9 + "|"]
    for r in [{**start, "arm": "start (no training)", "sampled_responses": 0}, *arms]:
        lines.append(f"| {r['arm']} | {r['greedy_pass_rate']:.3f} ({r['greedy_passed']}/{r['heldout_n']}) | "
                     f"{r['sampled_pass_rate']:.3f} | {r['k1_mean']:.3f} ± {r['k1_sem']:.3f} | "
                     f"{r['k3_mean']:.3f} ± {r['k3_sem']:.3f} | {r.get('sampled_responses', '')} | "
                     f"{r.get('sampled_tokens', '')} | {r.get('optimizer_steps', '')} | {r.get('train_s', '')} |")
    return lines


def finished(name: str, args) -> dict[str, Any] | None:
    """An arm's cached training + evaluation record, or None when it has not finished (nothing is run)."""
    d = Path(args.work) / name
    files = [d / "eval.json"] + ([] if name == "start" else [d / "run" / "done.json"])
    if not all(f.exists() for f in files):
        return None
    return {"arm": name, **{k: v for f in reversed(files) for k, v in json.loads(f.read_text()).items()}}


def write_report(args, arms: list[str], results_dir: Path, title: str, command: str) -> dict[str, Any]:
    """results.{json,md} and the frontier plot from the finished arms; unfinished ones are listed as such."""
    start = finished("start", args)
    if start is None:
        raise SystemExit("the start model has not been evaluated yet: run --arms start")
    rows = [r for r in (finished(a, args) for a in arms) if r is not None]
    missing = [a for a in arms if a not in {r["arm"] for r in rows}]
    results_dir.mkdir(parents=True, exist_ok=True)
    plot_frontier(start, rows, results_dir / "frontier.png")
    offline = Path(args.work) / "offline" / "data.json"
    result = {"command": command, "start": args.start,
              "settings": {k: v for k, v in vars(args).items() if k not in ("arms", "report")},
              "heldout_n": start["heldout_n"], "start_eval": start, "arms": rows, "unfinished_arms": missing,
              "offline_data": json.loads(offline.read_text()) if offline.exists() else None}
    _write_json(results_dir / "results.json", result)
    md = [f"# {title}", "", f"`{command}`", "", *table(start, rows), "",
          f"Held-out: {start['heldout_n']} verifiable-instruction prompts (the demo's hash split), greedy with "
          f"{args.eval_max_new_tokens} new tokens; KL: {args.kl_samples} sample(s) per held-out prompt at "
          "temperature 1 from the final policy, scored by it and by the start model. Error bars / ± are one "
          "standard error.", ""]
    if missing:
        md += [f"Not run (out of the compute budget of this session): {', '.join(missing)}.", ""]
    md += ["![reward-KL frontier](frontier.png)", ""]
    (results_dir / "results.md").write_text("\n".join(md))
    print("\n".join(md))
    return result


def build_parser(doc: str = __doc__) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--start", required=True, help="start model dir (the demo's SFT model)")
    ap.add_argument("--work", required=True, help="cache of every stage (runs, samples, evaluations)")
    ap.add_argument("--arms", default="", help="comma-separated arms to train now (e.g. grpo_n4,ppo_n4,dpo,exo)")
    ap.add_argument("--report", action="store_true", help="write results.{json,md} and the plot from the finished arms (runs nothing)")
    ap.add_argument("--results", default=str(REPO / "experiments/results/rl_compare"))
    ap.add_argument("--prompts", type=int, default=32, help="training prompts (one pass: steps x prompts-per-step)")
    ap.add_argument("--heldout", type=int, default=48)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--prompts-per-step", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=48, help="sample budget (RL rollouts and offline samples)")
    ap.add_argument("--offline-k", type=int, default=4, help="samples per prompt for the DPO / EXO data")
    ap.add_argument("--lr", type=float, default=1e-5, help="policy learning rate of every arm")
    ap.add_argument("--eval-max-new-tokens", type=int, default=64)
    ap.add_argument("--kl-samples", type=int, default=1, help="sampled answers per held-out prompt for the KL")
    ap.add_argument("--gen-batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads; on the shared 2-core machine, while another process held a core, the "
                         "evaluation of one model took 548 s with 2 threads and 97 s with 1")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget-s", type=float, default=0,
                    help="start no new arm after this many seconds (0: no limit); rerun to continue")
    return ap


def setup(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    Path(args.work).mkdir(parents=True, exist_ok=True)


def main(argv: list[str] | None = None) -> int:
    import sys

    args = build_parser().parse_args(argv)
    setup(args)
    t_start = time.perf_counter()
    for arm in filter(None, args.arms.split(",")):
        if args.budget_s and time.perf_counter() - t_start > args.budget_s:
            print(f"time budget spent: {arm} and later arms left for the next invocation", flush=True)
            return 75
        t0 = time.perf_counter()
        r = run_arm(arm, args)
        print(f"{arm}: {'interrupted: run again to resume' if r is None else 'done'} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
        if r is None:
            return 130
    if args.report:
        # the matched arms (128 sampled responses each), then the samples-per-prompt arms as other budgets
        write_report(args, ["grpo_n4", "ppo_n4", "dpo", "exo", "ppo_n1", "grpo_n2", "grpo_n8"], Path(args.results),
                     "GRPO vs PPO vs DPO vs EXO from the demo's SFT model (verifier reward, matched samples)",
                     "python experiments/rl_compare.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
