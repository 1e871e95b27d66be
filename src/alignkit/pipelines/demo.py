"""``alignkit demo``: SFT → on-policy preference data → DPO on the embedded model, with a before/after report.

1. **Baseline**: greedy verifier pass rate of the base model on held-out verifiable-instruction prompts.
2. **SFT** (rejection-sampling fine-tuning): train on the base model's *passing* samples
   (``alignkit/data/demo/verifiable_sft.jsonl``), response tokens only.
3. **Preference data**: sample K responses per training prompt from the SFT model, verify each,
   pair a passing with a failing one (``alignkit.pipelines.verifiable_prefs``).
4. **DPO** from the SFT model (reference = SFT model; log-probs cached) on those pairs, with
   held-out preference accuracy before/after.
5. **RL** (``rl_steps > 0``): GRPO with the verifier reward from the DPO model (``alignkit rl``).
6. **Evaluation** of every trained model on the held-out prompts, and the
   **report**: ``report.md`` with the before/after table, examples and plots of loss and
   reward margin, plus ``results.json``.

Every number in the table is measured in the run; nothing is precomputed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignkit.atomic import write_atomic
from alignkit.config import Precision, StrictModel


class DemoConfig(StrictModel):
    """``alignkit demo`` (configs/demo.yaml): the verifiable-instruction SFT -> DPO job on the embedded model."""

    model: str = "smollm2-135m-instruct"
    """Base model: embedded name, local HF dir or hub id."""
    out: str = "runs/demo"
    """Output directory (report.md, results.json, config.yaml, models)."""
    n_train: int = 96
    """Training prompts to sample preference data on."""
    n_heldout: int = 48
    """Held-out prompts for the pass rate."""
    k: int = 4
    """Samples per prompt for preference data."""
    temperature: float = 0.9
    """Sampling temperature of the preference data."""
    sft_epochs: int = 1
    """SFT epochs (used when sft_steps is 0)."""
    sft_steps: int = 16
    """Cap on SFT optimizer steps of 8 rows (0: sft_epochs)."""
    min_pairs: int = 8
    """Stop if fewer verified pairs than this."""
    sft_lr: float = 1e-5
    """SFT learning rate."""
    dpo_epochs: int = 2
    """DPO epochs."""
    dpo_lr: float = 5e-6
    """DPO learning rate."""
    beta: float = 0.1
    """DPO beta."""
    nll_weight: float = 0.1
    """Weight of the NLL term on chosen responses during DPO."""
    precision: Precision = "auto"
    """Training precision of SFT and DPO (auto: bf16 only where the hardware multiplies bf16 natively, else fp32)."""
    rl_steps: int = 2
    """GRPO steps with the verifier reward after DPO (0: no RL stage)."""
    rl_prompts_per_step: int = 8
    """Training prompts sampled per RL step."""
    rl_n: int = 4
    """Samples per prompt in each RL step (the GRPO group)."""
    rl_lr: float = 2e-6
    """RL learning rate."""
    gen_batch: int = 64
    """Sequences decoded together when sampling and evaluating (on CPU, decoding is bound by reading the
    weights once per step: 64 rows decode ~2.3x as many tokens/s as 16; see docs/performance.md)."""
    seed: int = 0
    """Seed of the prompt split and of sampling."""


def _read_rows(path: Path) -> list[dict]:
    from alignkit.data.records import read_objects

    return [rec.value for rec in read_objects(path)]


def _pass_rate(model_path: str, rows: list[dict], batch_size: int) -> dict[str, Any]:
    """Greedy held-out verifier pass rate of ``model_path`` (generation in fp32: decoding is not trained)."""
    from alignkit.generate.engine import make_engine
    from alignkit.pipelines.verifiable_prefs import pass_rate

    engine = make_engine(model_path, "hf", dtype="float32", batch_size=batch_size)
    return pass_rate(engine, rows, progress=True)


def _metrics(path: Path) -> list[dict]:
    return _read_rows(path) if path.is_file() and path.stat().st_size else []


def plot_training(runs: dict[str, Path], out_png: Path) -> None:
    """Loss (every run) and DPO reward margin / accuracy per step, from each run's metrics.jsonl."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for name, run in runs.items():
        logs = [x for x in _metrics(run / "metrics.jsonl") if "loss" in x]
        steps = [x["step"] for x in logs]
        axes[0].plot(steps, [x["loss"] for x in logs], marker="o", ms=3, label=name)
        if logs and "rewards/margins" in logs[0]:
            axes[1].plot(steps, [x["rewards/margins"] for x in logs], marker="o", ms=3, label=name)
            axes[2].plot(steps, [x["rewards/accuracies"] for x in logs], marker="o", ms=3, label=name)
    for ax, title in zip(axes, ("training loss", "DPO reward margin (beta * log-ratio)", "DPO reward accuracy"),
                         strict=True):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)


@dataclass
class _Run:
    """What the stages share: the settings, where outputs go, the console and each stage's time."""

    cfg: DemoConfig
    out: Path
    console: Any
    timings: dict[str, float] = field(default_factory=dict)

    def stage(self, key: str, title: str, fn: Callable[[], Any]) -> Any:
        """Run one stage under a heading; its wall time is printed and kept as ``<key>_s``."""
        self.console.rule(f"[bold]{title}")
        t = time.perf_counter()
        value = fn()
        self.timings[f"{key}_s"] = time.perf_counter() - t
        self.console.print(f"{key}: {self.timings[key + '_s']:.0f} s")
        return value


def _train_sft(run: _Run, base: str) -> dict[str, Any]:
    from alignkit.config import load_config
    from alignkit.data.verifiable import DEMO_SFT
    from alignkit.train.sft import SFTConfig, train_sft

    cfg = run.cfg
    sft_cfg = load_config(SFTConfig, None, [
        f"model.name_or_path={base}", f"data.train={DEMO_SFT}", "data.eval_fraction=0.1",
        f"train.output_dir={run.out / 'sft'}", "train.batch_size=8",
        f"train.max_steps={cfg.sft_steps}" if cfg.sft_steps else f"train.epochs={cfg.sft_epochs}",
        f"train.lr={cfg.sft_lr}", "train.warmup_steps=2", f"train.precision={cfg.precision}",
        "data.policy.max_length=256", "data.policy.max_prompt_length=160",
    ])
    return train_sft(sft_cfg)


def _preference_data(run: _Run, sft_dir: str, train_prompts: list[dict]) -> tuple[str, dict[str, Any]]:
    """K samples per training prompt from the SFT model, verified, paired pass-vs-fail -> dpo_pairs.jsonl."""
    import torch

    from alignkit.atomic import write_jsonl_atomic
    from alignkit.errors import UserError
    from alignkit.generate.engine import SamplingParams, make_engine
    from alignkit.pipelines.verifiable_prefs import build_pairs, score_samples

    cfg = run.cfg
    engine = make_engine(sft_dir, "hf", dtype="float32", batch_size=cfg.gen_batch)
    torch.manual_seed(cfg.seed)
    params = SamplingParams(max_new_tokens=64, temperature=cfg.temperature, top_p=0.95, n=cfg.k)
    pairs, _kway, stats = build_pairs(score_samples(engine, train_prompts, params, progress=True))
    if len(pairs) < cfg.min_pairs:
        raise UserError(f"only {len(pairs)} preference pairs from {len(train_prompts)} prompts: "
                        f"raise n_train or k ({stats})")
    path = run.out / "dpo_pairs.jsonl"
    write_jsonl_atomic(path, pairs)
    return str(path), stats


def _train_dpo(run: _Run, sft_dir: str, pref_data: str) -> dict[str, Any]:
    from alignkit.config import load_config
    from alignkit.train.preference import PreferenceConfig, train_preference

    cfg = run.cfg
    dpo_cfg = load_config(PreferenceConfig, None, [
        f"model.name_or_path={sft_dir}", f"data.train={pref_data}", "data.eval_fraction=0.2",
        f"train.output_dir={run.out / 'dpo'}", f"train.epochs={cfg.dpo_epochs}", "train.batch_size=4",
        "train.grad_accum=2", f"train.lr={cfg.dpo_lr}", "train.warmup_steps=1",
        f"train.precision={cfg.precision}", f"loss.beta={cfg.beta}", f"nll_weight={cfg.nll_weight}",
        "data.policy.max_length=256", "data.policy.max_prompt_length=160",
    ])
    return train_preference(dpo_cfg)


def _train_rl(run: _Run, dpo_dir: str, train_prompts: list[dict]) -> dict[str, Any]:
    """GRPO with the verifier reward from the DPO model (``alignkit rl``; held-out scoring is stage 6)."""
    from alignkit.atomic import write_jsonl_atomic
    from alignkit.pipelines.rl_stage import grpo_stage

    cfg = run.cfg
    prompts = run.out / "rl_prompts.jsonl"
    write_jsonl_atomic(prompts, train_prompts)
    return grpo_stage(dpo_dir, str(prompts), None, str(run.out / "rl"),
                      prompts_per_step=cfg.rl_prompts_per_step, n=cfg.rl_n, steps=cfg.rl_steps,
                      max_new_tokens=64, lr=cfg.rl_lr, precision=cfg.precision, seed=cfg.seed)


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Run the demo job ``cfg`` describes; returns the results also written to ``<out>/results.json``."""
    from rich.console import Console

    from alignkit.config import dump_config
    from alignkit.data.verifiable import DEMO_SFT, make_splits
    from alignkit.models import resolve_model_path

    out = Path(cfg.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, out / "config.yaml")
    run = _Run(cfg, out, Console())
    t_all = time.perf_counter()
    base = resolve_model_path(cfg.model)
    # Prompts are regenerated deterministically; the hash split keeps held-out prompts out of training.
    train_prompts, heldout = make_splits(cfg.n_train, cfg.n_heldout, seed=cfg.seed)
    held_ids = {r["id"] for r in heldout}
    leaked = [r["id"] for r in _read_rows(DEMO_SFT) if r.get("id") in held_ids]
    if leaked:
        raise RuntimeError(f"shipped SFT rows overlap the held-out prompts: {leaked[:5]}")
    rl = cfg.rl_steps > 0
    last = 6 if rl else 5

    def evaluate(model_dir: str) -> dict[str, Any]:
        return _pass_rate(model_dir, heldout, cfg.gen_batch)

    before = run.stage("baseline_eval", f"1/{last} baseline: held-out verifier pass rate (greedy)",
                       lambda: evaluate(base))
    sft = run.stage("sft", f"2/{last} SFT on the base model's passing samples", lambda: _train_sft(run, base))
    pref_data, pair_stats = run.stage(
        "sampling", f"3/{last} preference data: K samples per prompt from the SFT model, verified",
        lambda: _preference_data(run, sft["output_dir"], train_prompts))
    dpo = run.stage("dpo", f"4/{last} DPO from the SFT model", lambda: _train_dpo(run, sft["output_dir"], pref_data))
    rl_summary = run.stage("rl", f"5/{last} RL: GRPO with the verifier reward from the DPO model",
                           lambda: _train_rl(run, dpo["output_dir"], train_prompts)) if rl else None
    models = {"sft": sft["output_dir"], "dpo": dpo["output_dir"]}
    if rl_summary:
        models["rl"] = rl_summary["output_dir"]
    after = run.stage("final_eval", f"{last}/{last} evaluation after " + ", ".join(m.upper() for m in models),
                      lambda: {name: evaluate(path) for name, path in models.items()})
    run.timings["total_s"] = time.perf_counter() - t_all

    plot_training({"SFT": out / "sft", "DPO": out / "dpo"}, out / "training.png")
    results = _results(run, {"base": before, **after}, sft, dpo, rl_summary, pair_stats, len(heldout))
    write_atomic(out / "results.json", json.dumps(results, indent=1, default=str))
    write_atomic(out / "report.md", _report_md(results))
    _print_summary(run, results)
    return results


def _results(run: _Run, evals: dict[str, dict], sft: dict, dpo: dict, rl: dict | None, pair_stats: dict,
             n_heldout: int) -> dict[str, Any]:
    from alignkit.models import DEFAULT_MODEL

    cfg = run.cfg
    results = {
        "model": cfg.model if cfg.model != DEFAULT_MODEL else f"{DEFAULT_MODEL} (embedded)",
        "heldout_prompts": n_heldout,
        "pass_rate": {name: ev["pass_rate"] for name, ev in evals.items()},
        "pass_rate_by_type": {name: ev["by_type"] for name, ev in evals.items()},
        "preference_eval": {"before_dpo": dpo["eval_before"], "after_dpo": dpo["eval_after"]},
        "sft": {k: sft[k] for k in ("steps", "final_loss", "eval_before", "eval_after", "data")},
        "dpo": {k: dpo[k] for k in ("steps", "final_loss", "data", "reference_cache")},
        "pairs": pair_stats,
        "timings_s": {k: round(v, 1) for k, v in run.timings.items()},
        "settings": cfg.model_dump(mode="json"),
        "examples": _examples(evals["base"], evals["rl" if rl else "dpo"]),
    }
    if rl:
        results["rl"] = {"steps": rl["steps"], "train_reward": _rl_rewards(Path(rl["output_dir"]))}
    return results


def _rl_rewards(rl_dir: Path) -> list[float]:
    """Mean raw verifier reward of each RL step's samples (from metrics.jsonl)."""
    return [round(x["reward/mean"], 4) for x in _metrics(rl_dir / "metrics.jsonl") if "reward/mean" in x]


def _print_summary(run: _Run, results: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title="alignkit demo: before / after (held-out, measured in this run)")
    for col in ("stage", "verifier pass rate", "pref. acc (mean logp)", "pref. acc (implicit reward)"):
        table.add_column(col)
    pr, pe = results["pass_rate"], results["preference_eval"]
    pb, pa = pe["before_dpo"], pe["after_dpo"]
    table.add_row("base model", _pct(pr["base"]), "", "")
    table.add_row("after SFT", _pct(pr["sft"]), _pct(pb.get("pref_acc_logp")), "(= reference)")
    table.add_row("after DPO", _pct(pr["dpo"]), _pct(pa.get("pref_acc_logp")), _pct(pa.get("reward_acc")))
    if "rl" in pr:
        table.add_row("after RL (GRPO)", _pct(pr["rl"]), "", "")
    run.console.print(table)
    run.console.print("stage times (s): " + ", ".join(
        f"{k.removesuffix('_s')} {v:.0f}" for k, v in run.timings.items()))
    run.console.print(f"report: {run.out / 'report.md'}")


def _pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.1f}%"


def _examples(before: dict, after: dict, k: int = 4) -> list[dict]:
    """Held-out prompts whose outcome changed, for the report."""
    b = {r["id"]: r for r in before["results"]}
    changed = [(b[r["id"]], r) for r in after["results"] if r["id"] in b and b[r["id"]]["passed"] != r["passed"]]
    return [{"id": a["id"], "type": a["type"], "before": a["text"], "before_passed": a["passed"],
             "after": z["text"], "after_passed": z["passed"]} for a, z in changed[:k]]


def _report_md(r: dict) -> str:
    pr, pe = r["pass_rate"], r["preference_eval"]
    lines = [
        "# alignkit demo report", "",
        f"Model: `{r['model']}`. Held-out prompts: {r['heldout_prompts']}. Total time: {r['timings_s']['total_s']} s.",
        "", "## Before / after", "",
        "| stage | verifier pass rate | pref. acc (mean logp) | pref. acc (implicit reward) | reward margin |",
        "| --- | --- | --- | --- | --- |",
        f"| base model | {_pct(pr['base'])} | | | |",
        f"| after SFT | {_pct(pr['sft'])} | {_pct(pe['before_dpo'].get('pref_acc_logp'))} | (reference) | |",
        f"| after DPO | {_pct(pr['dpo'])} | {_pct(pe['after_dpo'].get('pref_acc_logp'))} | "
        f"{_pct(pe['after_dpo'].get('reward_acc'))} | {pe['after_dpo'].get('reward_margin', float('nan')):.3f} |",
        *([f"| after RL (GRPO, {r['rl']['steps']} steps) | {_pct(pr['rl'])} | | | |"] if "rl" in r else []),
        "",
        "Pass rate: greedy decoding, 64 new tokens, verifier of `alignkit.data.verifiable`. Preference accuracy:"
        " held-out pairs sampled from the SFT model (20% of prompts), chosen = passing sample.",
        "", "## Pass rate by constraint type", "",
        "| type | " + " | ".join(m.upper() if m != "base" else "base" for m in pr) + " |",
        "| --- |" + " --- |" * len(pr),
    ]
    by = r["pass_rate_by_type"]
    for t in by["base"]:
        lines.append(f"| {t} | " + " | ".join(_pct(by[m].get(t, {}).get("pass_rate")) for m in pr) + " |")
    p = r["pairs"]
    lines += ["", "## Training", "", "![loss and reward margin](training.png)", "",
              f"SFT: {r['sft']['steps']} steps, held-out NLL {r['sft']['eval_before'].get('nll', float('nan')):.3f} → "
              f"{r['sft']['eval_after'].get('nll', float('nan')):.3f}. DPO: {r['dpo']['steps']} steps on "
              f"{r['dpo']['data']['kept']} pairs (reference cache hit: {r['dpo']['reference_cache']['hit']}).", "",
              "Preference data from the SFT model's samples: "
              + ", ".join(f"{k}={v}" for k, v in p.items() if isinstance(v, int | float)), "",
              *([f"RL (GRPO, verifier reward): {r['rl']['steps']} steps; mean training reward per step: "
                 f"{r['rl']['train_reward']}.", ""] if "rl" in r else []),
              "## Examples that changed", ""]
    for e in r["examples"]:
        lines += [f"- `{e['id']}` ({e['type']}): {'pass' if e['before_passed'] else 'fail'} → "
                  f"{'pass' if e['after_passed'] else 'fail'}", f"  - before: {e['before']!r}",
                  f"  - after: {e['after']!r}"]
    lines += ["", "## Timings (s)", "", *[f"- {k}: {v}" for k, v in r["timings_s"].items()], ""]
    return "\n".join(lines)
