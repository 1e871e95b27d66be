"""``alignkit demo``: SFT → on-policy preference data → DPO on the embedded model, with a before/after report.

1. **Baseline**: greedy verifier pass rate of the base model on held-out verifiable-instruction prompts.
2. **SFT** (rejection-sampling fine-tuning): train on the base model's *passing* samples
   (``alignkit/data/demo/verifiable_sft.jsonl``), response tokens only.
3. **Preference data**: sample K responses per training prompt from the SFT model, verify each,
   pair a passing with a failing one (``alignkit.pipelines.verifiable_prefs``).
4. **DPO** from the SFT model (reference = SFT model; log-probs cached) on those pairs, with
   held-out preference accuracy before/after.
5. **Report**: ``report.md`` with the before/after table, examples and plots of loss and
   reward margin, plus ``results.json``.

Every number in the table is measured in the run; nothing is precomputed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Literal

from alignkit.config import StrictModel


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
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """Training precision of SFT and DPO (auto: bf16 only where the hardware multiplies bf16 natively, else fp32)."""
    gen_batch: int = 16
    """Sequences decoded together when sampling and evaluating."""
    seed: int = 0
    """Seed of the prompt split and of sampling."""


def _write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _pass_rate(model_path: str, rows: list[dict], batch_size: int, dtype: str) -> dict[str, Any]:
    from alignkit.generate.engine import make_engine
    from alignkit.pipelines.verifiable_prefs import pass_rate

    engine = make_engine(model_path, "hf", dtype=dtype, batch_size=batch_size)
    return pass_rate(engine, rows, progress=True)


def _metrics(path: Path) -> list[dict]:
    return _read_jsonl(path) if path.is_file() else []


def plot_training(runs: dict[str, Path], out_png: Path) -> None:
    """Loss (every run) and DPO reward margin / accuracy per step, from each run's metrics.jsonl."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for name, run in runs.items():
        logs = _metrics(run / "metrics.jsonl")
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


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Run the demo job ``cfg`` describes; returns the results also written to ``<out>/results.json``."""
    import torch
    from rich.console import Console
    from rich.table import Table

    from alignkit.config import dump_config, load_config
    from alignkit.data.verifiable import DEMO_SFT, make_splits
    from alignkit.errors import UserError
    from alignkit.generate.engine import SamplingParams, make_engine
    from alignkit.models import DEFAULT_MODEL, resolve_model_path
    from alignkit.pipelines.verifiable_prefs import build_pairs, score_samples
    from alignkit.train.preference import PreferenceConfig, train_preference
    from alignkit.train.sft import SFTConfig, train_sft

    console = Console()
    out = Path(cfg.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, out / "config.yaml")
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    base = resolve_model_path(cfg.model)
    # Prompts are regenerated deterministically; the hash split keeps held-out prompts out of training.
    train_prompts, heldout = make_splits(cfg.n_train, cfg.n_heldout, seed=cfg.seed)
    shipped_sft = _read_jsonl(DEMO_SFT)  # the base model's passing samples (rejection sampling)
    held_ids = {r["id"] for r in heldout}
    leaked = [r["id"] for r in shipped_sft if r.get("id") in held_ids]
    if leaked:
        raise RuntimeError(f"shipped SFT rows overlap the held-out prompts: {leaked[:5]}")

    console.rule("[bold]1/5 baseline: held-out verifier pass rate (greedy)")
    t = time.perf_counter()
    before = _pass_rate(base, heldout, cfg.gen_batch, "float32")
    timings["baseline_eval_s"] = time.perf_counter() - t

    console.rule("[bold]2/5 SFT on the base model's passing samples")
    t = time.perf_counter()
    sft_data = str(DEMO_SFT)
    sft_cfg = load_config(SFTConfig, None, [
        f"model.name_or_path={base}", f"data.train={sft_data}", "data.eval_fraction=0.1",
        f"train.output_dir={out / 'sft'}", "train.batch_size=8",
        f"train.max_steps={cfg.sft_steps}" if cfg.sft_steps else f"train.epochs={cfg.sft_epochs}",
        f"train.lr={cfg.sft_lr}", "train.warmup_steps=2", f"train.precision={cfg.precision}",
        "data.policy.max_length=256", "data.policy.max_prompt_length=160",
    ])
    sft_summary = train_sft(sft_cfg)
    timings["sft_s"] = time.perf_counter() - t
    sft_dir = sft_summary["output_dir"]

    console.rule("[bold]3/5 preference data: K samples per prompt from the SFT model, verified")
    t = time.perf_counter()
    engine = make_engine(sft_dir, "hf", batch_size=cfg.gen_batch)
    torch.manual_seed(cfg.seed)
    params = SamplingParams(max_new_tokens=64, temperature=cfg.temperature, top_p=0.95, n=cfg.k)
    scored = score_samples(engine, train_prompts, params, progress=True)
    pairs, _kway, pair_stats = build_pairs(scored)
    del engine
    if len(pairs) < cfg.min_pairs:
        raise UserError(f"only {len(pairs)} preference pairs from {len(train_prompts)} prompts: "
                        f"raise n_train or k ({pair_stats})")
    pref_data = _write_jsonl(out / "dpo_pairs.jsonl", pairs)
    timings["sampling_s"] = time.perf_counter() - t

    console.rule("[bold]4/5 DPO from the SFT model")
    t = time.perf_counter()
    dpo_cfg = load_config(PreferenceConfig, None, [
        f"model.name_or_path={sft_dir}", f"data.train={pref_data}", "data.eval_fraction=0.2",
        f"train.output_dir={out / 'dpo'}", f"train.epochs={cfg.dpo_epochs}", "train.batch_size=4",
        "train.grad_accum=2", f"train.lr={cfg.dpo_lr}", "train.warmup_steps=1",
        f"train.precision={cfg.precision}", f"loss.beta={cfg.beta}", f"nll_weight={cfg.nll_weight}",
        "data.policy.max_length=256", "data.policy.max_prompt_length=160",
    ])
    dpo_summary = train_preference(dpo_cfg)
    timings["dpo_s"] = time.perf_counter() - t

    console.rule("[bold]5/5 evaluation after SFT and after DPO")
    t = time.perf_counter()
    after_sft = _pass_rate(sft_dir, heldout, cfg.gen_batch, "float32")
    after_dpo = _pass_rate(dpo_summary["output_dir"], heldout, cfg.gen_batch, "float32")
    timings["final_eval_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t_all

    plot_training({"SFT": out / "sft", "DPO": out / "dpo"}, out / "training.png")
    results = {
        "model": cfg.model if cfg.model != DEFAULT_MODEL else f"{DEFAULT_MODEL} (embedded)",
        "heldout_prompts": len(heldout),
        "pass_rate": {"base": before["pass_rate"], "sft": after_sft["pass_rate"], "dpo": after_dpo["pass_rate"]},
        "pass_rate_by_type": {"base": before["by_type"], "sft": after_sft["by_type"], "dpo": after_dpo["by_type"]},
        "preference_eval": {"before_dpo": dpo_summary["eval_before"], "after_dpo": dpo_summary["eval_after"]},
        "sft": {k: sft_summary[k] for k in ("steps", "final_loss", "eval_before", "eval_after", "data")},
        "dpo": {k: dpo_summary[k] for k in ("steps", "final_loss", "data", "reference_cache")},
        "pairs": pair_stats,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "settings": cfg.model_dump(mode="json"),
        "examples": _examples(before, after_dpo),
    }
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    (out / "report.md").write_text(_report_md(results), encoding="utf-8")

    table = Table(title="alignkit demo: before / after (held-out, measured in this run)")
    for col in ("stage", "verifier pass rate", "pref. acc (mean logp)", "pref. acc (implicit reward)"):
        table.add_column(col)
    pb, pa = dpo_summary["eval_before"], dpo_summary["eval_after"]
    table.add_row("base model", _pct(before["pass_rate"]), "", "")
    table.add_row("after SFT", _pct(after_sft["pass_rate"]), _pct(pb.get("pref_acc_logp")), "(= reference)")
    table.add_row("after DPO", _pct(after_dpo["pass_rate"]), _pct(pa.get("pref_acc_logp")), _pct(pa.get("reward_acc")))
    console.print(table)
    console.print("stage times (s): " + ", ".join(f"{k.removesuffix('_s')} {v:.0f}" for k, v in timings.items()))
    console.print(f"report: {out / 'report.md'}")
    return results


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
        "",
        "Pass rate: greedy decoding, 64 new tokens, verifier of `alignkit.data.verifiable`. Preference accuracy:"
        " held-out pairs sampled from the SFT model (20% of prompts), chosen = passing sample.",
        "", "## Pass rate by constraint type", "", "| type | base | SFT | DPO |", "| --- | --- | --- | --- |",
    ]
    by = r["pass_rate_by_type"]
    for t in by["base"]:
        lines.append(f"| {t} | {_pct(by['base'][t]['pass_rate'])} | {_pct(by['sft'].get(t, {}).get('pass_rate'))} | "
                     f"{_pct(by['dpo'].get(t, {}).get('pass_rate'))} |")
    p = r["pairs"]
    lines += ["", "## Training", "", "![loss and reward margin](training.png)", "",
              f"SFT: {r['sft']['steps']} steps, held-out NLL {r['sft']['eval_before'].get('nll', float('nan')):.3f} → "
              f"{r['sft']['eval_after'].get('nll', float('nan')):.3f}. DPO: {r['dpo']['steps']} steps on "
              f"{r['dpo']['data']['kept']} pairs (reference cache hit: {r['dpo']['reference_cache']['hit']}).", "",
              "Preference data from the SFT model's samples: "
              + ", ".join(f"{k}={v}" for k, v in p.items() if isinstance(v, int | float)), "",
              "## Examples that changed", ""]
    for e in r["examples"]:
        lines += [f"- `{e['id']}` ({e['type']}): {'pass' if e['before_passed'] else 'fail'} → "
                  f"{'pass' if e['after_passed'] else 'fail'}", f"  - before: {e['before']!r}",
                  f"  - after: {e['after']!r}"]
    lines += ["", "## Timings (s)", "", *[f"- {k}: {v}" for k, v in r["timings_s"].items()], ""]
    return "\n".join(lines)
