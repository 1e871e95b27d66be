"""Claim 8 of issue 19, emergence vs loss: over the checkpoints of one SFT run on multi-digit arithmetic,
does exact match leave chance below some held-out loss, while a continuous metric on the same outputs
moves smoothly?

Per training seed: full SFT (every parameter) of the model on mathgen ``arithmetic`` problems (one
operation, operands up to 999: ``Compute 918 + 358.``), saving a checkpoint every ``--save-every`` steps.
Each checkpoint (and the start model, step 0) is an arm, scored on the same held-out problems:

- **exact match** (the discontinuous metric, the arms' ``mean``): ``mathgen.check_answer`` of the greedy
  output against the reference answer, 0/1 per item;
- **digit accuracy** (continuous, same outputs): the fraction of the reference answer's digits that
  the extracted final answer has at the same place (right-aligned; missing answer = 0);
- **held-out loss**: the mean token NLL of the reference solution after the chat-rendered prompt.

Budgets are matched by construction (arms are checkpoints of the same run: equal optimizer steps
= the step in the arm's name). Units (journal): ``train/seed{s}`` (resumes the SFT run from its last
checkpoint if killed) and ``eval/seed{s}/step{k}``. ``--quick``: a tiny random model, one seed, 16
held-out items, 8 steps: a smoke test of the whole path, not evidence.

    python experiments/emergence.py --work runs/exp-emergence            # full: 3 seeds, 500 held-out
    python experiments/emergence.py --work /tmp/em-quick --quick          # smoke (< 2 min)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import study  # noqa: E402 (experiments/ is not a package)

NAME = "emergence_vs_loss"
CLAIM = 8
MODEL = "smollm2-135m-instruct"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    study.add_frame_args(p)
    p.add_argument("--model", default=MODEL, help="start model (quick: a tiny random model built in --work)")
    p.add_argument("--seeds", default="0,1,2", help="training seeds, comma-separated (quick: 0)")
    p.add_argument("--n-train", type=int, default=2000, help="training problems (quick: 64)")
    p.add_argument("--n-heldout", type=int, default=500, help="held-out problems (quick: 16)")
    p.add_argument("--steps", type=int, default=300, help="optimizer steps per run (quick: 8)")
    p.add_argument("--save-every", type=int, default=30, help="checkpoint every N steps = one arm each (quick: 4)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=5e-5, help="quick: 1e-3")
    p.add_argument("--max-new-tokens", type=int, default=48, help="quick: 16")
    p.add_argument("--precision", default="auto", help="train.precision and generation dtype (quick: fp32)")
    p.add_argument("--data-seed", type=int, default=0, help="mathgen seed of the train / held-out problems")
    args = p.parse_args(argv)
    if args.quick:
        given = set(a.split("=")[0] for a in argv)
        for flag, value in (("--seeds", "0"), ("--n-train", 64), ("--n-heldout", 16), ("--steps", 8),
                            ("--save-every", 4), ("--lr", 1e-3), ("--max-new-tokens", 16), ("--precision", "fp32")):
            if flag not in given:
                setattr(args, flag[2:].replace("-", "_"), value)
    args.seeds = [int(s) for s in str(args.seeds).split(",")]
    if args.steps % args.save_every:
        p.error(f"--steps {args.steps} must be a multiple of --save-every {args.save_every}")
    return args


def problems(args) -> tuple[list[dict], list[dict]]:
    return study.math_split(args.n_train, args.n_heldout, seed=args.data_seed, categories=["arithmetic"],
                            steps=1, max_operand=999)


def start_model(args, work: Path) -> str:
    """The start checkpoint: ``--model``, or in quick mode a tiny random Llama saved once under ``work``."""
    if not args.quick:
        return args.model
    d = work / "tiny-start"
    if not (d / "config.json").is_file():
        from alignkit.models import tiny_random_causal_lm, tiny_tokenizer

        model, tok = tiny_random_causal_lm(tiny_tokenizer(), hidden=32, layers=2, heads=4, seed=0)
        model.save_pretrained(d)
        tok.save_pretrained(d)
    return str(d)


def train_seed(args, work: Path, seed: int, train_rows: list[dict]) -> dict[str, Any]:
    from alignkit.config import load_config
    from alignkit.data.mathgen import sft_rows, write_jsonl
    from alignkit.train.sft import SFTConfig, train_sft

    data = work / "data" / "train.jsonl"
    if not data.is_file():
        write_jsonl(data, sft_rows(train_rows))
    out = work / f"sft-seed{seed}"
    cfg = load_config(SFTConfig, None, [
        f"model.name_or_path={start_model(args, work)}", f"data.train={data}", f"train.output_dir={out}",
        f"train.seed={seed}", f"train.max_steps={args.steps}", f"train.save_every={args.save_every}",
        f"train.keep_checkpoints={args.steps // args.save_every + 1}", f"train.batch_size={args.batch_size}",
        f"train.lr={args.lr}", f"train.precision={args.precision}", "train.progress=false", "train.report_to=[]",
        "train.schedule=constant"])
    summary = train_sft(cfg, resume=(out / "checkpoints").is_dir())
    if summary["interrupted"]:
        raise SystemExit(f"SFT seed {seed} was interrupted ({summary['signal']}); rerun to resume it")
    return {"steps": summary["steps"], "final_loss": summary["final_loss"], "precision": summary["precision"]}


def digit_accuracy(text: str, answer: str) -> float:
    """Share of the reference answer's digits matched at the same place (right-aligned) by the output's answer."""
    from alignkit.data.mathgen import extract_final_answer

    got = extract_final_answer(text) or ""
    ref = [c for c in answer if c.isdigit()]
    out = [c for c in got if c.isdigit()]
    hits = sum(a == b for a, b in zip(reversed(ref), reversed(out), strict=False))
    return hits / len(ref)


def eval_checkpoint(args, work: Path, seed: int, step: int, held: list[dict]) -> dict[str, list[float]]:
    from alignkit.data.mathgen import check_answer, format_solution, prompt_of
    from alignkit.evals.trajectory import model_directory
    from alignkit.generate.engine import SamplingParams, make_engine

    if step == 0:
        model_dir = start_model(args, work)
    else:
        from alignkit.train.checkpoint import checkpoint_dirs

        found = {int(d.name.split("-")[1]): d for d in checkpoint_dirs(work / f"sft-seed{seed}")}
        if step not in found:
            raise study.StudyError(f"no checkpoint of step {step} under {work / f'sft-seed{seed}'} (have {sorted(found)})")
        model_dir = model_directory(str(found[step]), work / "exported" / f"seed{seed}-step{step}")
    engine = make_engine(model_dir, backend="hf", batch_size=16, dtype=args.precision)
    prompts = [prompt_of(p) for p in held]
    res = engine.generate(prompts, SamplingParams(max_new_tokens=args.max_new_tokens, temperature=0.0))
    texts = [r.completions[0].text for r in res]
    contexts = [engine.render(p) for p in prompts]
    nll = study.per_item_nll(engine.model, engine.tokenizer, [format_solution(p["steps"], p["answer"]) for p in held],
                             contexts)
    return {"exact": [float(check_answer(t, p["answer"])) for t, p in zip(texts, held, strict=True)],
            "digits": [digit_accuracy(t, p["answer"]) for t, p in zip(texts, held, strict=True)],
            "nll": nll, "sample": texts[:3]}


def report(args, journal: study.Journal, steps: list[int], out: Path, command: str) -> Path:
    from alignkit.evals.trajectory import emergence_threshold

    def arrays(metric: str) -> dict[str, list[list[float]]]:
        return {f"step-{k}": [journal.get(f"eval/seed{s}/step{k}")[metric] for s in args.seeds] for k in steps}

    exact, digits, nll = arrays("exact"), arrays("digits"), arrays("nll")
    em, loss, dig = (study.summarize_arms(a, args.seeds) for a in (exact, nll, digits))
    arm_names = list(exact)
    # chance of an exact 3-4 digit answer is ~0; "above chance" = more than 2 points (trajectory's rule)
    threshold = emergence_threshold([(loss[a]["mean"], 100 * em[a]["mean"]) for a in arm_names], chance=0.0, margin=2.0)
    first, last = arm_names[0], arm_names[-1]
    headline = (("Quick smoke run (not evidence): " if args.quick else "")
                + f"exact match {em[first]['mean']:.3f} at step 0 -> {em[last]['mean']:.3f} "
                f"[{em[last]['ci95'][0]:.3f}, {em[last]['ci95'][1]:.3f}] at {last} "
                f"(held-out loss {loss[first]['mean']:.2f} -> {loss[last]['mean']:.2f} nats/token); "
                f"digit accuracy {dig[first]['mean']:.3f} -> {dig[last]['mean']:.3f}; "
                f"exact match above 2 points: {threshold['status']}.")
    obj = study.build_results(
        name=NAME, claim=CLAIM, command=command, quick=args.quick,
        heldout=(f"mathgen arithmetic, 1 operation, operands <= 999, seed {args.data_seed}, hash split "
                 f"is_heldout(id, {study.HELDOUT_FRACTION}); disjoint from the {args.n_train} training problems"),
        seeds=args.seeds, metric="exact match of the greedy answer (mathgen.check_answer), 0/1",
        matched_by="arms are checkpoints of the same SFT run: the arm's step = optimizer steps from the start model",
        arms=exact, pairs=[(b, a) for a, b in zip(arm_names, arm_names[1:], strict=False)], headline=headline,
        extra={"model": args.model if not args.quick else "tiny random Llama (quick)", "steps": args.steps,
               "save_every": args.save_every, "lr": args.lr, "batch_size": args.batch_size,
               "max_new_tokens": args.max_new_tokens, "precision": args.precision,
               "heldout_loss": loss, "digit_accuracy": dig, "exact_match_threshold": threshold,
               "training": {str(s): journal.get(f"train/seed{s}") for s in args.seeds},
               "samples": {a: journal.get(f"eval/seed{args.seeds[0]}/step{k}")["sample"]
                           for a, k in zip(arm_names, steps, strict=True)}})
    x = {a: loss[a]["mean"] for a in arm_names}
    return study.write_results(obj, out, lambda o, path: plot(o, path, x, dig))


def plot(obj: dict[str, Any], path: Path, loss: dict[str, float], dig: dict[str, dict]) -> None:
    """Exact match and digit accuracy (95 % intervals) against held-out loss, one point per checkpoint."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from alignkit.atomic import atomic_path

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, summary in (("exact match", obj["arms"]), ("digit accuracy", dig)):
        names = list(summary)
        xs = [loss[n] for n in names]
        m = [summary[n]["mean"] for n in names]
        err = [[v - summary[n]["ci95"][0] for n, v in zip(names, m, strict=True)],
               [summary[n]["ci95"][1] - v for n, v in zip(names, m, strict=True)]]
        ax.errorbar(xs, m, yerr=err, fmt="o-", capsize=3, label=label)
    ax.invert_xaxis()
    ax.set_xlabel("held-out loss (nats/token), decreasing with training")
    ax.set_ylabel("score")
    ax.set_title("Emergence vs loss" + (" (quick, not evidence)" if obj["quick"] else "") + " — 95 % intervals")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    work = Path(args.work)
    out = Path(args.out) if args.out else (work / "results" if args.quick else study.RESULTS_DIR / NAME)
    command = study.rerun_command([str(Path(__file__)), *argv])
    train_rows, held = problems(args)
    steps = list(range(0, args.steps + 1, args.save_every))
    config = {k: v for k, v in vars(args).items() if k not in ("work", "out", "budget_s", "lock")}
    with study.heavy_lock(args.lock):
        journal = study.Journal(work, config)
        units = []
        for s in args.seeds:
            units.append((f"train/seed{s}", lambda s=s: train_seed(args, work, s, train_rows)))
            units += [(f"eval/seed{s}/step{k}", lambda s=s, k=k: eval_checkpoint(args, work, s, k, held)) for k in steps]
        finished = study.run_units(journal, units, args.budget_s)
        if finished:
            path = report(args, journal, steps, out, command)
            print(f"results: {path}")
            print(json.loads(path.read_text())["headline"])
    return study.budget_exit(finished)


if __name__ == "__main__":
    sys.exit(main())
