"""``alignkit demo``: SFT → on-policy preference data → DPO → GRPO on the embedded model, with a before/after report.

1. **Baseline**: IFEval accuracy (prompt- and instruction-level, strict and loose, Wilson 95% intervals) of
   the base model, greedy, on the held-out split of the demo's IFEval-format prompts
   (:mod:`alignkit.data.ifeval_gen`: our own prompts over the 25 IFEval instruction types -- not the
   official IFEval set, and easier, so the numbers are not comparable with published scores).
2. **SFT** (rejection-sampling fine-tuning): train on the base model's *passing* samples
   (``alignkit/data/demo/verifiable_sft.jsonl``), response tokens only (config section ``sft``).
3. **Preference data**: sample K responses per training prompt from the SFT model, verify each,
   pair a passing with a failing one (``alignkit.pipelines.verifiable_prefs``).
4. **DPO** from the SFT model (reference = SFT model; log-probs cached) on those pairs, with
   held-out preference accuracy before/after (section ``dpo``).
5. **RL** (section ``rl``; ``rl: null`` skips it): GRPO from the DPO model with the ``ifeval`` reward
   (the fraction of a prompt's instructions followed, strict; ``alignkit rl``).
6. **Evaluation** of every trained model on the held-out prompts (the final model on all ``n_heldout``,
   the intermediate SFT and DPO models on the first ``n_heldout_intermediate``), and the
   **report**: ``report.md`` with the before/after table, examples and plots of loss and
   reward margin, plus ``results.json``.

Every number in the table is measured in the run; nothing is precomputed. The stages run on the one
stage runner (:mod:`alignkit.pipelines.stages`): a rerun of the same ``output_dir`` reuses the stages
whose settings and inputs are unchanged, and an interrupted training resumes from its checkpoint.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, Field, model_validator

from alignkit.atomic import write_atomic
from alignkit.config import Precision, StrictModel, set_dotted
from alignkit.data.verifiable import DEMO_SFT
from alignkit.pipelines.rl_stage import GRPO_VERIFIER
from alignkit.pipelines.stages import Stages, file_hash, fingerprint
from alignkit.train.preference import PreferenceConfig
from alignkit.train.rl import RLConfig
from alignkit.train.sft import SFTConfig

# What fits `make demo`'s 15 minutes on 2 idle cores (docs/demo_data.md, "The demo's evaluation budget").
RL_STEPS = 10
N_HELDOUT_INTERMEDIATE = 64


def merge_settings(defaults: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """``given`` merged into a copy of ``defaults`` key by key; a section whose ``type`` changes (a tagged
    union such as ``loss``) replaces the default's keys."""
    merged = json.loads(json.dumps(defaults))
    if "type" in given and given.get("type") != merged.get("type"):
        return json.loads(json.dumps(given))
    for key, value in given.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_settings(merged[key], value)
        else:
            merged[key] = json.loads(json.dumps(value)) if isinstance(value, dict | list) else value
    return merged


# The demo's settings of each recipe section (ordinary SFTConfig / PreferenceConfig / RLConfig keys), the
# defaults that configs/demo.yaml spells out. A section given in YAML or overrides is merged into these, so
# `dpo.loss.beta=0.2` changes one key and keeps the rest of the demo's DPO settings.
SECTION_DEFAULTS: dict[str, dict[str, Any]] = {
    "sft": {
        "data": {"eval_fraction": 0.1, "limits": {"max_length": 256, "max_prompt_length": 160}},
        "train": {"batch_size": 8, "max_steps": 16, "lr": 1e-5, "warmup_steps": 2},
    },
    "dpo": {
        "data": {"eval_fraction": 0.2, "limits": {"max_length": 256, "max_prompt_length": 160}},
        "train": {"epochs": 2, "batch_size": 4, "grad_accum": 2, "lr": 5e-6, "warmup_steps": 1},
        "loss": {"type": "dpo", "beta": 0.1},
        "nll_weight": 0.1,
    },
    "rl": merge_settings(GRPO_VERIFIER, {
        "rollout": {"prompts_per_step": 8, "n": 4, "max_new_tokens": 64},
        "reward": {"verifier": "ifeval"},
        "train": {"max_steps": RL_STEPS, "lr": 2e-6},
    }),
}

# Old top-level keys (before the recipe sections) -> the key they set now; still accepted.
LEGACY_KEYS: dict[str, str] = {
    "out": "output_dir",
    "sft_lr": "sft.train.lr",
    "dpo_epochs": "dpo.train.epochs",
    "dpo_lr": "dpo.train.lr",
    "beta": "dpo.loss.beta",
    "nll_weight": "dpo.nll_weight",
    "rl_prompts_per_step": "rl.rollout.prompts_per_step",
    "rl_n": "rl.rollout.n",
    "rl_lr": "rl.train.lr",
}
# ... and three whose meaning needs more than a new name: sft_steps / sft_epochs (sft.train.max_steps, or
# sft.train.epochs when sft_steps is 0) and rl_steps (rl.train.max_steps; 0: rl null). See _legacy_keys.


class DemoConfig(StrictModel):
    """``alignkit demo`` (configs/demo.yaml): verifiable-instruction SFT -> DPO -> GRPO on the embedded model.

    ``sft``, ``dpo`` and ``rl`` are the recipes' own configs (``alignkit sft`` / ``dpo`` / ``rl`` keys). The
    demo wires what connects the stages, and refuses other values for them: ``model.name_or_path`` (sft: the
    demo's ``model``; dpo: the SFT model; rl: the DPO model), ``data.train`` (sft: the shipped passing
    samples; dpo: ``<output_dir>/dpo_pairs.jsonl``; rl: ``<output_dir>/rl_prompts.jsonl``) and
    ``train.output_dir`` (``<output_dir>/sft``, ``/dpo``, ``/rl``). A key a section does not give takes the
    demo's setting (SECTION_DEFAULTS, spelled out in configs/demo.yaml), else the recipe's own default.
    """

    cli_aliases: ClassVar[dict[str, str]] = {
        "--out": "output_dir", "--sft-steps": "sft.train.max_steps", "--sft-lr": "sft.train.lr",
        "--dpo-epochs": "dpo.train.epochs", "--dpo-lr": "dpo.train.lr", "--nll-weight": "dpo.nll_weight",
        "--rl-prompts-per-step": "rl.rollout.prompts_per_step", "--rl-n": "rl.rollout.n", "--rl-lr": "rl.train.lr",
    }

    model: str = "smollm2-135m-instruct"
    """Base model: embedded name, local HF dir or hub id."""
    output_dir: str = "runs/demo"
    """Output directory (report.md, results.json, config.yaml, stages.json, the models); a rerun of the same
    directory reuses the stages whose settings are unchanged (old spelling: ``out``)."""
    n_train: int = 96
    """Training prompts to sample preference data on (and the RL stage's prompts)."""
    n_heldout: int = Field(default=500, ge=1)
    """Held-out IFEval-format prompts the base and the final model are evaluated on (500: a 95% interval of
    at most +-4.4 points, so a 5-point change between two models is at the edge of what it resolves;
    docs/demo_data.md)."""
    n_heldout_intermediate: int | None = Field(default=N_HELDOUT_INTERMEDIATE, ge=1)
    """The SFT and DPO models are evaluated on the first this many held-out prompts (null: all ``n_heldout``),
    which keeps ``make demo`` inside its CPU budget; their intervals are wider accordingly."""
    max_new_tokens: int = Field(default=64, ge=1)
    """Answer budget of the preference sampling and of every evaluation (greedy); the RL stage has its own
    (rl.rollout.max_new_tokens)."""
    k: int = 4
    """Samples per prompt for preference data."""
    temperature: float = 0.9
    """Sampling temperature of the preference data."""
    min_pairs: int = 8
    """Stop if fewer verified pairs than this."""
    gen_batch: int = 64
    """Sequences decoded together when sampling and evaluating (on CPU, decoding is bound by reading the
    weights once per step: 64 rows decode ~2.3x as many tokens/s as 16; see docs/performance.md)."""
    seed: int = 0
    """Seed of the prompt split and of sampling; also rl.train.seed unless that is given."""
    precision: Precision | None = None
    """Training precision of all three stages: sets sft/dpo/rl ``train.precision`` (null: each section's
    own, whose default auto is bf16 only where the hardware multiplies bf16 natively, else fp32). Sampling
    and evaluation generate in this precision too (null: auto); the eval results record the dtype."""
    sft: SFTConfig
    """Stage 2, SFT on the base model's passing samples (``alignkit sft`` keys; model.name_or_path,
    data.train and train.output_dir are set by the demo). Old keys: sft_lr, sft_steps, sft_epochs."""
    dpo: PreferenceConfig
    """Stage 4, DPO from the SFT model on the verified pairs (``alignkit dpo`` keys; model.name_or_path,
    data.train and train.output_dir are set by the demo). Old keys: dpo_lr, dpo_epochs, beta, nll_weight."""
    rl: RLConfig | None
    """Stage 5, GRPO with the verifier reward from the DPO model (``alignkit rl`` keys; model.name_or_path,
    data.train and train.output_dir are set by the demo); null: no RL stage. Old keys: rl_steps (0: null),
    rl_prompts_per_step, rl_n, rl_lr."""

    @model_validator(mode="before")
    @classmethod
    def _sections(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = _legacy_keys(dict(data))
        out = Path(data.get("output_dir", cls.model_fields["output_dir"].default))
        wired = {
            "sft": {"model.name_or_path": data.get("model", cls.model_fields["model"].default),
                    "data.train": str(DEMO_SFT), "train.output_dir": str(out / "sft")},
            "dpo": {"model.name_or_path": str(out / "sft"), "data.train": str(out / "dpo_pairs.jsonl"),
                    "train.output_dir": str(out / "dpo")},
            "rl": {"model.name_or_path": str(out / "dpo"), "data.train": str(out / "rl_prompts.jsonl"),
                   "train.output_dir": str(out / "rl")},
        }
        for name, defaults in SECTION_DEFAULTS.items():
            given = data.get(name, {})
            if given is None and name == "rl":
                continue
            if isinstance(given, BaseModel):
                given = given.model_dump(mode="json", exclude_unset=True)
            if not isinstance(given, dict):
                return data  # not a section: the field's own validation names the error
            section = merge_settings(defaults, given)
            if name == "rl" and "seed" not in given.get("train", {}):
                set_dotted(section, "train.seed", data.get("seed", cls.model_fields["seed"].default), name)
            for key, value in wired[name].items():
                mine = _get_dotted(given, key)
                if mine is not None and mine != value:
                    raise ValueError(f"{name}.{key} is set by the demo ({value}); remove it")
                set_dotted(section, key, value, name)
            data[name] = section
        return data


_UNSET = object()


def _get_dotted(data: dict[str, Any], key: str, missing: Any = None) -> Any:
    for part in key.split("."):
        if not isinstance(data, dict) or part not in data:
            return missing
        data = data[part]
    return data


def _legacy_keys(data: dict[str, Any]) -> dict[str, Any]:
    """Move the old top-level keys (LEGACY_KEYS, sft_steps/sft_epochs, rl_steps) to the keys they set now,
    and apply ``precision`` to the three sections. An old key given together with a different value of
    its new spelling is an error (give one of them), as for every renamed key."""

    def put(old: str, key: str, value: Any) -> None:
        if key.startswith("rl.") and "rl" in data and data["rl"] is None:
            raise ValueError(f"{old} sets {key}, but rl is null (no RL stage)")
        given = _get_dotted(data, key, _UNSET)
        if given is not _UNSET and given != value:
            raise ValueError(f"{old}={value!r} and {key}={given!r}: {old} sets {key}, give one of them")
        set_dotted(data, key, value, old)

    if data.get("rl_steps") == 0:  # no RL stage: the old rl_* keys had nothing to set
        for old in ("rl_steps", "rl_prompts_per_step", "rl_n", "rl_lr"):
            data.pop(old, None)
        if data.get("rl"):
            raise ValueError("rl_steps=0 (no RL stage) and rl settings given: set rl: null instead")
        data["rl"] = None
    if "rl_steps" in data:
        put("rl_steps", "rl.train.max_steps", data.pop("rl_steps"))
    for old, key in LEGACY_KEYS.items():
        if old in data:
            put(old, key, data.pop(old))
    if "sft_steps" in data or "sft_epochs" in data:
        steps, epochs = data.pop("sft_steps", 16), data.pop("sft_epochs", 1)  # the old defaults
        put("sft_steps", "sft.train.max_steps", steps or None)
        put("sft_epochs", "sft.train.epochs", None if steps else epochs)
    if data.get("precision") is not None:
        for name in ("sft", "dpo", *([] if "rl" in data and data["rl"] is None else ["rl"])):
            put("precision", f"{name}.train.precision", data["precision"])
    return data


def _read_rows(path: Path) -> list[dict]:
    from alignkit.data.records import read_objects

    return [rec.value for rec in read_objects(path)]


def generation_dtype(cfg: DemoConfig) -> str:
    """The torch dtype of the demo's sampling and evaluation: ``precision`` resolved like training's
    (``auto``/unset: bf16 only where the hardware multiplies bf16 natively), so evaluation follows the
    same capability rule as everything else; the resolved dtype is part of the stages' fingerprints."""
    from alignkit.precision import resolve_precision

    return resolve_precision(cfg.precision or "auto").dtype


def _ifeval_eval(model_path: str, rows: list[dict], batch_size: int, dtype: str, max_new_tokens: int
                 ) -> dict[str, Any]:
    """Greedy held-out IFEval metrics of ``model_path`` (``verifiable_prefs.pass_rate``), generated in ``dtype``
    with ``max_new_tokens`` (both recorded in the result)."""
    from alignkit.generate.engine import SamplingParams, make_engine
    from alignkit.pipelines.verifiable_prefs import pass_rate

    engine = make_engine(model_path, "hf", dtype=dtype, batch_size=batch_size)
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0)
    return {**pass_rate(engine, rows, params, progress=True), "dtype": dtype}


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
    """What the stages share: the settings, the stage runner, the held-out prompts and each model's fingerprint."""

    cfg: DemoConfig
    stages: Stages
    heldout: list[dict]
    title: Callable[[int, str], str]
    models: dict[str, tuple[str, str]] = field(default_factory=dict)
    """name -> (model directory or name, fingerprint of what made it)."""

    @property
    def out(self) -> Path:
        return self.stages.out

    def evaluate(self, rows_of: dict[str, list[dict]], key: str, title: str) -> dict[str, dict]:
        """Greedy IFEval metrics of each named model on its held-out rows, one eval_<name>.json each (one
        stage ``key``)."""
        paths = {name: self.out / f"eval_{name}.json" for name in rows_of}
        cfg, dtype = self.cfg, generation_dtype(self.cfg)
        fp = fingerprint([(self.models[n], rows_of[n]) for n in rows_of], cfg.gen_batch, cfg.max_new_tokens, dtype)
        self.stages.run(key, fp, list(paths.values()), lambda: [
            write_atomic(paths[n], json.dumps(_ifeval_eval(self.models[n][0], rows_of[n], cfg.gen_batch, dtype,
                                                           cfg.max_new_tokens)))
            for n in rows_of], title)
        return {name: json.loads(path.read_text()) for name, path in paths.items()}


def _preference_data(run: _Run, train_prompts: list[dict]) -> dict[str, Any]:
    """K samples per training prompt from the SFT model, verified, paired pass-vs-fail -> dpo_pairs.jsonl
    (pair statistics: pairs.json); fewer than ``min_pairs`` pairs stops the demo."""
    from alignkit.errors import UserError

    cfg = run.cfg
    pairs_path, stats_path = Path(cfg.dpo.data.train), run.out / "pairs.json"
    fp = fingerprint(run.models["sft"][1], train_prompts, cfg.k, cfg.temperature, cfg.seed, cfg.gen_batch,
                     generation_dtype(cfg), cfg.max_new_tokens)
    run.stages.run("sampling", fp, [pairs_path, stats_path], lambda: _sample_pairs(run, train_prompts, stats_path),
                   run.title(3, "preference data: K samples per prompt from the SFT model, verified"))
    stats = json.loads(stats_path.read_text())
    if stats["pairs"] < cfg.min_pairs:
        raise UserError(f"only {stats['pairs']} preference pairs from {len(train_prompts)} prompts: "
                        f"raise n_train or k ({stats})")
    run.models["pairs"] = (str(pairs_path), fingerprint(fp, file_hash(pairs_path)))
    return stats


def _sample_pairs(run: _Run, train_prompts: list[dict], stats_path: Path) -> None:
    import torch

    from alignkit.atomic import write_jsonl_atomic
    from alignkit.generate.engine import SamplingParams, make_engine
    from alignkit.pipelines.verifiable_prefs import build_pairs, score_samples

    cfg = run.cfg
    engine = make_engine(cfg.sft.train.output_dir, "hf", dtype=generation_dtype(cfg), batch_size=cfg.gen_batch)
    torch.manual_seed(cfg.seed)
    params = SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=0.95, n=cfg.k)
    pairs, _kway, stats = build_pairs(score_samples(engine, train_prompts, params, progress=True))
    write_jsonl_atomic(cfg.dpo.data.train, pairs)
    write_atomic(stats_path, json.dumps(stats, indent=1))


def _train(run: _Run, name: str, after: str, step: int, title: str) -> dict[str, Any]:
    """Train stage ``name`` (sft, dpo or rl) from the model of stage ``after`` with its config section."""
    from alignkit.train.preference import train_preference
    from alignkit.train.rl import train_rl
    from alignkit.train.sft import train_sft

    section = getattr(run.cfg, name)
    trainer = {"sft": train_sft, "dpo": train_preference, "rl": train_rl}[name]
    fp = fingerprint(run.models[after][1], file_hash(Path(section.data.train)), section.model_dump(mode="json"))
    model_dir = Path(section.train.output_dir)
    summary = run.stages.train(name, fp, model_dir, lambda resume: trainer(section, resume=resume),
                               run.title(step, title))
    run.models[name] = (str(model_dir), fp)
    return summary


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Run the demo job ``cfg`` describes; returns the results also written to ``<output_dir>/results.json``.
    A rerun of the same output_dir reuses every stage whose settings and inputs are unchanged."""
    from rich.console import Console

    from alignkit.atomic import write_jsonl_atomic
    from alignkit.data.verifiable import make_splits

    t_all = time.perf_counter()
    stages = Stages.open(cfg, Console())
    # Prompts are regenerated deterministically; the hash split keeps held-out prompts out of training.
    train_prompts, heldout = make_splits(cfg.n_train, cfg.n_heldout, seed=cfg.seed)
    held_keys = {r["key"] for r in heldout}
    leaked = [r["key"] for r in _read_rows(Path(cfg.sft.data.train)) if r.get("key") in held_keys]
    if leaked:
        raise RuntimeError(f"shipped SFT rows overlap the held-out prompts: {leaked[:5]}")
    last = 6 if cfg.rl else 5
    run = _Run(cfg, stages, heldout, lambda i, text: f"{i if i < 5 else last}/{last} {text}")
    run.models["base"] = (cfg.model, fingerprint(cfg.model))

    before = run.evaluate({"base": heldout}, "baseline_eval",
                          run.title(1, f"baseline: held-out IFEval accuracy (greedy, {len(heldout)} prompts)"))
    sft = _train(run, "sft", "base", 2, "SFT on the base model's passing samples")
    pair_stats = _preference_data(run, train_prompts)
    dpo = _train(run, "dpo", "pairs", 4, "DPO from the SFT model")
    rl_summary = None
    if cfg.rl:
        write_jsonl_atomic(cfg.rl.data.train, train_prompts)
        rl_summary = _train(run, "rl", "dpo", 5, f"RL: GRPO with the {cfg.rl.reward.verifier} reward from the DPO model")
    trained = ["sft", "dpo", *(["rl"] if cfg.rl else [])]
    few = heldout[: cfg.n_heldout_intermediate] if cfg.n_heldout_intermediate else heldout
    rows_of = {name: few for name in trained[:-1]} | {trained[-1]: heldout}
    after = run.evaluate(rows_of, "final_eval", run.title(6, "evaluation after " + ", ".join(
        f"{m.upper()} ({len(rows_of[m])} prompts)" for m in trained)))
    timings = {f"{k}_s": v for k, v in stages.timings.items()} | {"total_s": time.perf_counter() - t_all}

    plot_training({"SFT": Path(cfg.sft.train.output_dir), "DPO": Path(cfg.dpo.train.output_dir)},
                  run.out / "training.png")
    results = _results(cfg, {**before, **after}, sft, dpo, rl_summary, pair_stats, len(heldout), timings,
                       stages.reused)
    write_atomic(run.out / "results.json", json.dumps(results, indent=1, default=str))
    write_atomic(run.out / "report.md", _report_md(results))
    _print_summary(stages.console, run.out, results)
    return results


METRICS = ("prompt_level_strict_acc", "inst_level_strict_acc", "prompt_level_loose_acc", "inst_level_loose_acc")
_METRIC_LABELS = ("prompt strict", "inst. strict", "prompt loose", "inst. loose")


def headline(ev: dict[str, Any]) -> dict[str, Any]:
    """The four IFEval accuracies of one evaluation with a Wilson 95% interval each: prompt level over prompts
    (as ``alignkit eval ifeval`` reports), instruction level over instructions (which treats a prompt's
    instructions as independent; they are not quite, so that interval is a little narrow)."""
    from alignkit.annotate.agreement import wilson_interval

    res = ev["results"]
    hits = {"prompt_level_strict_acc": [all(r["follow_strict"]) for r in res],
            "prompt_level_loose_acc": [all(r["follow_loose"]) for r in res],
            "inst_level_strict_acc": [f for r in res for f in r["follow_strict"]],
            "inst_level_loose_acc": [f for r in res for f in r["follow_loose"]]}
    out: dict[str, Any] = {"n_prompts": len(res), "n_instructions": len(hits["inst_level_strict_acc"]),
                           "truncated": ev["truncated"]}
    for m in METRICS:
        flags = hits[m]
        out[m] = sum(flags) / len(flags) if flags else None
        out[m + "_ci95"] = list(wilson_interval(sum(flags), len(flags)) or ())
    return out


def _results(cfg: DemoConfig, evals: dict[str, dict], sft: dict, dpo: dict, rl: dict | None, pair_stats: dict,
             n_heldout: int, timings: dict[str, float], reused: list[str]) -> dict[str, Any]:
    from alignkit.models import DEFAULT_MODEL

    final = "rl" if rl else "dpo"
    ifeval = {name: headline(ev) for name, ev in evals.items()}
    few = min(len(ev["results"]) for ev in evals.values())
    if few < len(evals["base"]["results"]):  # the base model on the intermediate models' prompts, at no cost
        sub = evals["base"]["results"][:few]
        ifeval = {"base": ifeval.pop("base"), "base_subset": headline(
            {"results": sub, "truncated": sum(r["finish_reason"] == "length" for r in sub)}), **ifeval}
    results = {
        "model": cfg.model if cfg.model != DEFAULT_MODEL else f"{DEFAULT_MODEL} (embedded)",
        "heldout_prompts": n_heldout,
        "ifeval": ifeval,
        "pass_rate": {name: ev["pass_rate"] for name, ev in evals.items()},
        "by_instruction": {name: ev["instructions"] for name, ev in evals.items()},
        "preference_eval": {"before_dpo": dpo["eval_before"], "after_dpo": dpo["eval_after"]},
        "sft": {k: sft[k] for k in ("steps", "final_loss", "eval_before", "eval_after", "data")},
        "dpo": {k: dpo[k] for k in ("steps", "final_loss", "data", "reference_cache")},
        "pairs": pair_stats,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "reused_stages": reused,
        "settings": cfg.model_dump(mode="json"),
        "examples": _examples(evals["base"], evals[final]),
    }
    if rl:
        results["rl"] = {"steps": rl["steps"], "train_reward": _rl_rewards(Path(cfg.rl.train.output_dir))}
    return results


def _rl_rewards(rl_dir: Path) -> list[float]:
    """Mean raw reward of each RL step's samples (from metrics.jsonl)."""
    return [round(x["reward/mean"], 4) for x in _metrics(rl_dir / "metrics.jsonl") if "reward/mean" in x]


_STAGE_NAMES = {"base": "base model", "base_subset": "base model, same prompts as SFT/DPO", "sft": "after SFT",
                "dpo": "after DPO", "rl": "after RL (GRPO)"}


def _with_ci(h: dict[str, Any], metric: str) -> str:
    lo, hi = h[metric + "_ci95"] or (None, None)
    return f"{_pct(h[metric])} [{_pct(lo)}, {_pct(hi)}]" if lo is not None else _pct(h[metric])


def _print_summary(console: Any, out: Path, results: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title="alignkit demo: held-out IFEval accuracy (our IFEval-format prompts, not the official set; "
                        "95% Wilson intervals)")
    for col in ("stage", "prompts", *_METRIC_LABELS):
        table.add_column(col)
    for name, h in results["ifeval"].items():
        table.add_row(_STAGE_NAMES[name], str(h["n_prompts"]), *(_with_ci(h, m) for m in METRICS))
    console.print(table)
    pa = results["preference_eval"]["after_dpo"]
    console.print(f"held-out preference accuracy after DPO: {_pct(pa.get('reward_acc'))} (implicit reward)")
    console.print("stage times (s): " + ", ".join(
        f"{k.removesuffix('_s')} {v:.0f}" for k, v in results["timings_s"].items()))
    console.print(f"report: {out / 'report.md'}")


def _pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.1f}%"


def _examples(before: dict, after: dict, k: int = 4) -> list[dict]:
    """Held-out prompts whose prompt-level strict outcome changed, for the report."""
    b = {r["key"]: r for r in before["results"]}
    changed = [(b[r["key"]], r) for r in after["results"]
               if r["key"] in b and all(b[r["key"]]["follow_strict"]) != all(r["follow_strict"])]
    return [{"key": a["key"], "instruction_id_list": a["instruction_id_list"], "before": a["text"],
             "before_follow": a["follow_strict"], "after": z["text"], "after_follow": z["follow_strict"]}
            for a, z in changed[:k]]


def _report_md(r: dict) -> str:
    pe = r["preference_eval"]
    ife = r["ifeval"]
    lines = [
        "# alignkit demo report", "",
        f"Model: `{r['model']}`. Held-out prompts: {r['heldout_prompts']}. Total time: {r['timings_s']['total_s']} s.",
        "", "## Held-out IFEval accuracy", "",
        "Our IFEval-format prompts (`alignkit.data.ifeval_gen`, 25 instruction types; **not the official IFEval "
        "set**, and easier), scored by `alignkit.evals.ifeval` (strict and loose as the reference). Greedy, "
        f"{r['settings']['max_new_tokens']} new tokens, text scored as generated. Brackets: 95% Wilson intervals "
        "(prompt level over prompts, instruction level over instructions); two stages differ beyond noise "
        "where their intervals do not overlap.", "",
        "| stage | prompts | " + " | ".join(_METRIC_LABELS) + " | truncated |",
        "| --- | --- |" + " --- |" * (len(METRICS) + 1),
    ]
    for name, h in ife.items():
        steps = f", {r['rl']['steps']} steps" if name == "rl" else ""
        lines.append(f"| {_STAGE_NAMES[name].replace('(GRPO)', f'(GRPO{steps})')} | {h['n_prompts']} | "
                     + " | ".join(_with_ci(h, m) for m in METRICS) + f" | {h['truncated']} |")
    lines += ["", "Held-out preference accuracy (pairs sampled from the SFT model, 20% of prompts, chosen = passing "
              f"sample): mean log-prob {_pct(pe['before_dpo'].get('pref_acc_logp'))} before DPO → "
              f"{_pct(pe['after_dpo'].get('pref_acc_logp'))} after; implicit reward "
              f"{_pct(pe['after_dpo'].get('reward_acc'))}, margin {pe['after_dpo'].get('reward_margin', float('nan')):.3f}.",
              "", "## Instruction-level strict accuracy by instruction id", "",
              "| instruction | " + " | ".join(_STAGE_NAMES[m] for m in r["by_instruction"]) + " |",
              "| --- |" + " --- |" * len(r["by_instruction"])]
    by = r["by_instruction"]
    for iid in by["base"]:
        cells = [f"{_pct(by[m][iid]['strict_acc'])} (n={by[m][iid]['n']})" if iid in by[m] else "" for m in by]
        lines.append(f"| {iid} | " + " | ".join(cells) + " |")
    p = r["pairs"]
    lines += ["", "## Training", "", "![loss and reward margin](training.png)", "",
              f"SFT: {r['sft']['steps']} steps, held-out NLL {r['sft']['eval_before'].get('nll', float('nan')):.3f} → "
              f"{r['sft']['eval_after'].get('nll', float('nan')):.3f}. DPO: {r['dpo']['steps']} steps on "
              f"{r['dpo']['data']['kept']} pairs (reference cache hit: {r['dpo']['reference_cache']['hit']}).", "",
              "Preference data from the SFT model's samples: "
              + ", ".join(f"{k}={v}" for k, v in p.items() if isinstance(v, int | float)), "",
              *([f"RL (GRPO, reward {r['settings']['rl']['reward']['verifier']}): {r['rl']['steps']} steps; mean "
                 f"training reward per step: {r['rl']['train_reward']}.", ""] if "rl" in r else []),
              "## Examples that changed (prompt-level strict, base → final model)", ""]
    for e in r["examples"]:
        lines += [f"- `{e['key']}` ({', '.join(e['instruction_id_list'])}): {e['before_follow']} → "
                  f"{e['after_follow']}", f"  - before: {e['before']!r}", f"  - after: {e['after']!r}"]
    lines += ["", "## Timings (s)", "", *[f"- {k}: {v}" for k, v in r["timings_s"].items()], ""]
    return "\n".join(lines)
