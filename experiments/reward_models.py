"""Measured effects of issue 11 on the embedded model (CPU, minutes): run under the heavy-job lock.

    flock /tmp/alignkit-heavy.lock python experiments/reward_models.py length --out runs/exp-length
    flock /tmp/alignkit-heavy.lock python experiments/reward_models.py bon --out runs/exp-bon

``length``: two LoRA reward models on the same length-biased preference set (``bias``: share of pairs
where the longer response is chosen), one with ``data.balance_length=bucket``, the same number of
optimizer steps; both evaluated on a held-out set where length carries no signal (bias 0.5):
accuracy, accuracy when the longer / shorter side wins, and the reward-length Spearman correlation.

``bon``: an outcome RM (pairs: reference solution vs a slipped one) and a PRM (the same problems as
stepwise rows) trained with equal steps; the policy samples ``n`` solutions per held-out arithmetic
problem once; each scorer picks one; the held-out accuracy of best-of-N is reported next to the
oracle (verifier) and single-sample accuracy.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def _write(path: Path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


MODEL = "smollm2-135m-instruct"


def _rm(out: Path, train: str, held: str, steps: int, extra=()):
    from alignkit.config import load_config
    from alignkit.train.reward import RMConfig, train_rm

    over = [f"model.name_or_path={MODEL}", f"data.train={train}", f"data.eval={held}", f"train.output_dir={out}", f"train.max_steps={steps}",
            "train.batch_size=8", "train.lr=3e-4", "train.progress=false", "train.report_to=[]",
            "model.lora.r=16", "data.limits.max_length=256", *extra]
    return train_rm(load_config(RMConfig, None, over))


def length_experiment(out: Path, n_train: int, n_held: int, bias: float, steps: int) -> dict:
    from alignkit.data.length_bias import length_biased_pairs

    out.mkdir(parents=True, exist_ok=True)
    train = _write(out / "train.jsonl", length_biased_pairs(n_train, bias=bias, seed=0))
    held = _write(out / "heldout.jsonl", length_biased_pairs(n_held, bias=0.5, seed=1))
    results = {"n_train_pairs": n_train, "n_heldout_pairs": n_held, "train_bias": bias, "steps": steps}
    for name, extra in (("unbalanced", ()), ("balanced", ("data.balance_length=bucket",))):
        t0 = time.perf_counter()
        s = _rm(out / name, train, held, steps, extra)
        ev = s["eval_after"]
        results[name] = {k: ev[k] for k in ("accuracy", "accuracy_longer_wins", "accuracy_shorter_wins",
                                            "length_spearman", "reward_mean", "reward_std")}
        results[name]["train_pairs"] = s["train_pairs"]
        results[name]["before"] = {k: s["eval_before"][k] for k in ("accuracy", "length_spearman")}
        results[name]["seconds"] = round(time.perf_counter() - t0, 1)
    return results


def bon_experiment(out: Path, n_train: int, n_problems: int, n: int, steps: int, max_new_tokens: int) -> dict:
    import random

    from alignkit.config import load_config
    from alignkit.data.mathgen import format_solution, make_splits, prompt_of, stepwise_rows, wrong_solution
    from alignkit.generate.engine import SamplingParams, make_engine
    from alignkit.pipelines.best_of_n import ScorerConfig, bon_curve, score_samples
    from alignkit.train.prm import PRMConfig, train_prm

    out.mkdir(parents=True, exist_ok=True)
    train, _ = make_splits(n_train, 0, seed=0, categories=["arithmetic"], steps=2, max_operand=20)
    _, held = make_splits(0, n_problems, seed=0, categories=["arithmetic"], steps=2, max_operand=20)
    rng = random.Random(0)
    pairs = []
    for p in train:
        steps_w, ans_w, _ = wrong_solution(p, rng)
        pairs.append({"prompt": prompt_of(p), "chosen": [{"role": "assistant", "content": format_solution(p["steps"], p["answer"])}],
                      "rejected": [{"role": "assistant", "content": format_solution(steps_w, ans_w)}]})
    pairs_path = _write(out / "pairs.jsonl", pairs)
    stepwise_path = _write(out / "stepwise.jsonl", stepwise_rows(train, seed=0))
    t0 = time.perf_counter()
    rm = _rm(out / "orm", pairs_path, pairs_path, steps, ("data.eval=null", "data.eval_fraction=0.1"))
    prm = train_prm(load_config(PRMConfig, None, [
        f"model.name_or_path={MODEL}", f"data.train={stepwise_path}", "data.eval_fraction=0.1", f"train.output_dir={out / 'prm'}",
        f"train.max_steps={steps}", "train.batch_size=8", "train.lr=3e-4", "train.progress=false",
        "train.report_to=[]", "model.lora.r=16", "data.limits.max_length=256"]))
    train_s = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    engine = make_engine(MODEL, backend="hf", batch_size=32)
    problems = [{"prompt": prompt_of(p, conversational=False), "answer": p["answer"], "id": p["id"]} for p in held]
    res = engine.generate([p["prompt"] for p in problems],
                          SamplingParams(max_new_tokens=max_new_tokens, temperature=0.8, n=n, seed=0))
    samples = [[c.text for c in r.completions] for r in res]
    from alignkit.data.mathgen import check_answer

    correct = [[check_answer(t, p["answer"]) for t in ss] for p, ss in zip(problems, samples, strict=True)]
    sample_s = round(time.perf_counter() - t0, 1)
    ns = [k for k in (1, 2, 4, 8, 16) if k <= n and n % k == 0]
    curves = {}
    for name, sc in (("verifier", ScorerConfig(type="verifier")), ("orm", ScorerConfig(type="rm", model=str(out / "orm")))):
        curves[name] = {k: v["accuracy"] for k, v in bon_curve(score_samples(sc, problems, samples, correct), correct, ns).items()}
    # the PRM's step probabilities once, then each aggregation
    import torch

    from alignkit.losses import aggregate_step_scores
    from alignkit.train.prm import split_steps
    from alignkit.train.scorers import ProcessRewardScorer

    prm_scorer = ProcessRewardScorer(str(out / "prm"))
    flat = prm_scorer.step_probs([p["prompt"] for p in problems for _ in range(n)],
                                 [split_steps(t, "\n") for ss in samples for t in ss])
    for how in ("min", "last", "prod"):
        agg = [None if not ps else float(aggregate_step_scores(torch.tensor([ps]), torch.ones(1, len(ps), dtype=torch.bool), how)[0])
               for ps in flat]
        scores = [agg[i * n:(i + 1) * n] for i in range(len(problems))]
        curves[f"prm_{how}"] = {k: v["accuracy"] for k, v in bon_curve(scores, correct, ns).items()}
    (out / "samples.jsonl").write_text("".join(json.dumps({"id": p["id"], "samples": ss, "correct": ok}) + "\n"
                                               for p, ss, ok in zip(problems, samples, correct, strict=True)))
    return {"n_train_problems": n_train, "n_heldout_problems": n_problems, "samples_per_problem": n, "steps": steps,
            "orm_heldout_pair_accuracy": rm["eval_after"]["accuracy"], "prm_eval": prm["eval_after"],
            "curves": curves, "train_seconds": train_s, "sample_seconds": sample_s}


def main() -> None:
    global MODEL
    p = argparse.ArgumentParser()
    p.add_argument("which", choices=["length", "bon"])
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--n-train", type=int, default=400)
    p.add_argument("--n-heldout", type=int, default=120)
    p.add_argument("--bias", type=float, default=0.85)
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=80)
    p.add_argument("--model", default=MODEL, help="base of the reward models and the policy (smoke tests: a tiny model)")
    a = p.parse_args()
    MODEL = a.model
    out = Path(a.out)
    if a.which == "length":
        res = length_experiment(out, a.n_train, a.n_heldout, a.bias, a.steps)
    else:
        res = bon_experiment(out, a.n_train, a.n_heldout, a.n, a.steps, a.max_new_tokens)
    (out / "results.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
