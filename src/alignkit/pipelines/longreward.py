"""``alignkit pipeline longreward``: long-context AI feedback -> preference pairs -> DPO -> before/after.

Stages (METHODS §1.5-1.6), each writing its files under ``output_dir`` and timed in ``results.json``:

1. **prompts** — the bundled pydoc prompt set or your ``{context, query}`` JSONL, split into training
   prompts and held-out evaluation prompts;
2. **sample** — K responses per training prompt from the policy (seeded); the policy's greedy
   answers to the held-out prompts are generated here too (the "before" answers);
3. **score** — the judge rates every response on helpfulness, logicality, faithfulness and
   completeness (SQLite call cache in ``output_dir``, so a rerun repeats no judge call);
4. **pairs** — best vs worst per prompt (``pairs.jsonl``) and K-way rows with rewards (``kway.jsonl``);
5. **train** — ``alignkit.train.preference`` on the pairs: DPO with the auxiliary NLL term on the
   chosen response by default, or EXO / DPO-rw on the K-way rows (``pairs.train_on: kway``);
6. **evaluate** — the trained policy's greedy answers to the held-out prompts, scored by the same
   judge next to the "before" answers; optionally the offline mini suite before and after;
7. **report** — ``report.md`` with per-dimension score distributions, the pairs' score gaps and the
   before/after table (PNG plots beside it) and ``results.json``.

A stage whose inputs and settings are unchanged since a previous run of the same ``output_dir`` is
reused (its fingerprint is kept in ``stages.json``), so an interrupted pipeline resumes where it
stopped.
"""

from __future__ import annotations

import gc
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from alignkit.config import ConfigError, Precision, StrictModel
from alignkit.data.tokenize import DataPolicy
from alignkit.judge.client import JudgeConfig
from alignkit.judge.longreward import DIMENSIONS, LongRewardConfig
from alignkit.models import DEFAULT_MODEL
from alignkit.pipelines.stages import PipelineError, Stages, file_hash, fingerprint, read_rows
from alignkit.train.loop import TrainConfig
from alignkit.train.preference import DPOLoss, LossConfig, ReferenceConfig
from alignkit.train.run import LoraSettings


class PromptsConfig(StrictModel):
    """Where the long-context prompts come from and how they are split."""

    source: str = "bundled"
    """'bundled' (questions over CPython's pydoc topics) or a JSONL of {context, query, [id]} rows."""
    train_prompts: int | None = Field(default=None, ge=1)
    """Use the first N prompts for sampling and training (null: all that are not held out)."""
    eval_prompts: int = Field(default=0, ge=0)
    """Hold out the last N prompts for the before/after evaluation."""


class SamplingSection(StrictModel):
    """Candidate sampling from the policy (METHODS §1.6: the official example draws 10 per prompt)."""

    k: int = Field(default=10, ge=2)
    """Responses sampled per training prompt."""
    temperature: float = Field(default=0.8, gt=0.0)
    """Sampling temperature."""
    top_p: float = Field(default=0.95, gt=0.0, le=1.0)
    """Nucleus sampling mass."""
    max_new_tokens: int = Field(default=512, ge=1)
    """Most tokens per sampled response."""
    seed: int = 0
    """Prompt row i is sampled with seed SEED+i."""
    batch_size: int = Field(default=8, ge=1)
    """Sequences decoded together (sampling and evaluation)."""
    dtype: Precision = "auto"
    """Policy dtype for generation (auto: bfloat16 where the hardware has native bf16, else float32)."""
    device: str | None = None
    """cpu | cuda | cuda:N (null: the backend's default)."""
    backend: Literal["auto", "hf", "vllm"] = "auto"
    """Generation backend: auto picks vLLM when installed and a GPU is present."""


class PairsSection(StrictModel):
    """How scored responses become training rows (METHODS §1.6: best vs worst per prompt)."""

    min_scored: int = Field(default=5, ge=2)
    """Skip prompts with fewer successfully scored responses (official: 5)."""
    prompt_format: Literal["messages", "string"] = "messages"
    """Prompt of the rows: chat messages or a plain string."""
    train_on: Literal["pairs", "kway"] = "pairs"
    """pairs: best-vs-worst rows (dpo, ipo, exo_pair losses); kway: all scored responses (exo, dpo_rw)."""


class TrainingSection(StrictModel):
    """The preference recipe's settings (``alignkit dpo``); model and data are filled in by the pipeline."""

    loss: LossConfig = Field(default_factory=lambda: DPOLoss(beta=0.15))
    """Default DPO beta 0.15 (METHODS §1.6, unverified recall: a starting point)."""
    nll_weight: float = 0.1
    """Auxiliary per-token NLL on the chosen response (METHODS §1.6 / Appendix A; ~0.1, unverified)."""
    logit_temperature: float = 1.0
    """Divide policy and reference logits by T before log-softmax (1.0: off)."""
    reference: ReferenceConfig = Field(default_factory=ReferenceConfig)
    """The reference model (null name: the policy's initial weights) and its log-prob cache."""
    lora: LoraSettings | None = None
    """Train LoRA adapters instead of all weights (null: full fine-tuning)."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward: less memory, more compute."""
    renamed = {"data_policy": "data_limits"}  # "policy" is the model being trained
    data_limits: DataPolicy = Field(
        default_factory=lambda: DataPolicy(max_length=4096, max_prompt_length=3584)
    )
    """Sequence limits for the long prompts (the bundled ones are up to ~2.8k tokens)."""
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(lr=1e-6, batch_size=2))
    """Loop settings; output_dir is set by the pipeline (<output_dir>/model) and may not be given here."""

    @model_validator(mode="after")
    def _no_output_dir(self):
        if "output_dir" in self.train.model_fields_set:
            raise ValueError(
                "training.train.output_dir is set by the pipeline (<output_dir>/model); remove it"
            )
        return self


class EvaluationSection(StrictModel):
    """Before/after evaluation of the trained policy."""

    judge_eval: bool = True
    """Score the policy's greedy answers to the held-out prompts before and after training."""
    max_new_tokens: int = Field(default=512, ge=1)
    """Most tokens per greedy held-out answer."""
    mini_suite: bool = False
    """Also run the offline mini suite (alignkit eval --suite mini) before and after."""
    mini_tasks: list[str] = Field(default_factory=list)
    """Mini-suite tasks (empty: all)."""
    mini_lengths: list[str] = Field(default_factory=lambda: ["1k"])
    """Mini-suite nominal lengths."""
    mini_samples_per_length: int = Field(default=2, ge=1)
    """Mini-suite samples per task and length."""


class LongRewardPipelineConfig(StrictModel):
    """``alignkit pipeline longreward --config FILE``."""

    output_dir: str = "runs/longreward"
    """Every stage's files, the model, report.md and results.json go here (rerun the same dir to resume)."""
    policy: str = DEFAULT_MODEL
    """The model to sample from and train (embedded name, HF directory or hub id)."""
    prompts: PromptsConfig = Field(default_factory=PromptsConfig)
    """Where the long-context prompts come from and how they are split."""
    sampling: SamplingSection = Field(default_factory=SamplingSection)
    """Candidate sampling from the policy."""
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    """Which judge answers, and how it is called."""
    scorer: LongRewardConfig = Field(default_factory=LongRewardConfig)
    """LongReward scorer settings."""
    pairs: PairsSection = Field(default_factory=PairsSection)
    """How scored responses become training rows."""
    training: TrainingSection = Field(default_factory=TrainingSection)
    """The preference recipe's settings."""
    evaluation: EvaluationSection = Field(default_factory=EvaluationSection)
    """Before/after evaluation."""

    @model_validator(mode="after")
    def _consistent(self):
        kway_loss = "kway" in self.training.loss.rows
        if self.pairs.train_on == "kway" and not kway_loss:
            raise ValueError(
                f"pairs.train_on=kway needs training.loss.type exo or dpo_rw (got {self.training.loss.type})"
            )
        if self.pairs.train_on == "pairs" and kway_loss:
            raise ValueError(
                f"training.loss.type {self.training.loss.type} trains on K-way rows: set pairs.train_on=kway"
            )
        if self.pairs.min_scored > self.sampling.k:
            raise ValueError(
                f"pairs.min_scored={self.pairs.min_scored} can never be met with sampling.k={self.sampling.k}"
            )
        return self


# ----------------------------------------------------------------------------------------- helpers
def load_prompt_rows(cfg: PromptsConfig, out: Path) -> tuple[list[dict], list[dict]]:
    """(training rows, held-out rows), validated, with prompt ids and policy prompts filled in."""
    from alignkit.generate.jsonl import write_jsonl_atomic
    from alignkit.judge.sampling import read_prompt_rows
    from alignkit.pipelines.longreward_prompts import BUNDLED_FILE

    source = str(BUNDLED_FILE) if cfg.source == "bundled" else cfg.source
    rows = read_prompt_rows(source)
    n_eval = cfg.eval_prompts
    if n_eval >= len(rows):
        raise ConfigError(
            f"prompts.eval_prompts={n_eval} leaves no training prompt ({source} has {len(rows)})"
        )
    train, held = rows[: len(rows) - n_eval], rows[len(rows) - n_eval :]
    if cfg.train_prompts is not None:
        if cfg.train_prompts > len(train):
            raise ConfigError(
                f"prompts.train_prompts={cfg.train_prompts}: only {len(train)} prompts available"
            )
        train = train[: cfg.train_prompts]
    write_jsonl_atomic(out / "prompts_train.jsonl", train)
    write_jsonl_atomic(out / "prompts_eval.jsonl", held)
    return train, held


def sampling_engine(model: str, s: SamplingSection):
    """The generation engine of ``model`` with a pipeline's sampling section (dtype, batch, device, backend)."""
    from alignkit.generate.engine import make_engine

    kw: dict[str, Any] = {"dtype": s.dtype, "batch_size": s.batch_size}
    if s.device:
        kw["device"] = s.device
    return make_engine(model, backend=s.backend, **kw)


def _greedy_answers(engine, rows: list[dict], max_new_tokens: int, tag: str) -> list[dict]:
    from alignkit.generate.engine import SamplingParams

    res = engine.generate(
        [r["prompt"] for r in rows], SamplingParams(max_new_tokens=max_new_tokens), progress=True
    )
    return [
        {
            "id": f"{tag}-{r['prompt_id']}",
            "prompt_id": r["prompt_id"],
            "context": r["context"],
            "query": r["query"],
            "prompt": r["prompt"],
            "response": g.completions[0].text,
            "finish_reason": g.completions[0].finish_reason,
        }
        for r, g in zip(rows, res, strict=True)
    ]


def _judge(cfg: LongRewardPipelineConfig, out: Path):
    from alignkit.judge.client import judge_from_config

    return judge_from_config(cfg.judge, cache_path=out / "judge_cache.sqlite")


def _usage_delta(now: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    """Judge usage of one stage (the judge's counters are cumulative)."""
    return {k: v - before.get(k, 0) for k, v in now.items() if isinstance(v, int)}


def _summarise_scores(rows: list[dict]) -> dict[str, Any]:
    scored = [r for r in rows if r["status"] == "scored"]
    out: dict[str, Any] = {"n": len(rows), "scored": len(scored), "failed": len(rows) - len(scored)}
    for d in (*DIMENSIONS, "reward"):
        vals = [r["reward"] if d == "reward" else r["scores"][d] for r in scored]
        out[d] = round(sum(vals) / len(vals), 3) if vals else None
    return out


# ----------------------------------------------------------------------------------------- the run
@dataclass
class _Run:
    """What every stage shares: the config, the output folder, the stage bookkeeping, the judge."""

    cfg: LongRewardPipelineConfig
    out: Path
    stages: Stages
    console: Any
    progress: bool
    results: dict[str, Any]
    judge: Any = None

    def get_judge(self):
        if self.judge is None:
            self.judge = _judge(self.cfg, self.out)
        return self.judge


def run_longreward_pipeline(cfg: LongRewardPipelineConfig, progress: bool = True) -> dict[str, Any]:
    """Run every stage; returns the results written to ``<output_dir>/results.json``."""
    stages = Stages.open(cfg)
    run = _Run(cfg, stages.out, stages, stages.console, progress, {"config": cfg.model_dump(mode="json")})
    started_all = time.time()
    try:
        train_rows, eval_rows, fp = _stage_prompts(run)
        fp, do_eval = _stage_sample(run, fp, train_rows, eval_rows)
        fp, scored = _stage_score(run, fp)
        fp, train_file, pairs = _stage_pairs(run, fp, scored)
        fp_train = _stage_train(run, fp, train_file)
        _stage_evaluate(run, fp_train, eval_rows, do_eval)
    finally:
        if run.judge is not None:
            run.judge.close()
    _stage_report(run, scored, pairs, started_all)
    return run.results


def _stage_prompts(run: _Run) -> tuple[list[dict], list[dict], str]:
    """1. prompts: the training and held-out rows (always re-read; cheap)."""
    t = time.time()
    train_rows, eval_rows = load_prompt_rows(run.cfg.prompts, run.out)
    fp = fingerprint(file_hash(run.out / "prompts_train.jsonl"), file_hash(run.out / "prompts_eval.jsonl"))
    run.stages.finish("prompts", fp, t)
    run.console.print(f"{len(train_rows)} training prompts, {len(eval_rows)} held-out prompts")
    run.results["prompts"] = {"train": len(train_rows), "eval": len(eval_rows)}
    return train_rows, eval_rows, fp


def _stage_sample(run: _Run, fp_prompts: str, train_rows: list[dict], eval_rows: list[dict]) -> tuple[str, bool]:
    """2. sample: K responses per training prompt, plus the "before" greedy answers to the held-out prompts."""
    from alignkit.generate.engine import SamplingParams
    from alignkit.generate.jsonl import write_jsonl_atomic
    from alignkit.judge.sampling import sample_responses

    cfg, out = run.cfg, run.out
    samples_path, before_path = out / "samples.jsonl", out / "eval_before_answers.jsonl"
    do_eval = cfg.evaluation.judge_eval and bool(eval_rows)
    fp = fingerprint(fp_prompts, cfg.policy, cfg.sampling.model_dump(), cfg.evaluation.max_new_tokens, do_eval)
    if run.stages.fresh("sample", fp, [samples_path] + ([before_path] if do_eval else [])):
        t = time.time()
        engine = sampling_engine(cfg.policy, cfg.sampling)
        s = cfg.sampling
        params = SamplingParams(max_new_tokens=s.max_new_tokens, temperature=s.temperature, top_p=s.top_p)
        samples = sample_responses(engine, train_rows, s.k, params, seed=s.seed, progress=run.progress)
        write_jsonl_atomic(samples_path, samples)
        if do_eval:
            write_jsonl_atomic(before_path, _greedy_answers(engine, eval_rows, cfg.evaluation.max_new_tokens, "before"))
        del engine
        gc.collect()
        run.stages.finish("sample", fp, t)
    samples = read_rows(samples_path)
    run.results["sampling"] = {
        "responses": len(samples),
        "finish_length": sum(r["finish_reason"] == "length" for r in samples),
    }
    return fingerprint(fp, file_hash(samples_path)), do_eval


def _stage_score(run: _Run, fp_sample: str) -> tuple[str, list[dict]]:
    """3. score: the judge rates every response (SQLite call cache: a rerun repeats no judge call)."""
    from alignkit.generate.jsonl import write_jsonl_atomic
    from alignkit.judge.scoring import score_rows

    cfg, out = run.cfg, run.out
    scored_path = out / "scored.jsonl"
    fp = fingerprint(fp_sample, cfg.judge.model_dump(), cfg.scorer.model_dump())
    if run.stages.fresh("score", fp, [scored_path]):
        t = time.time()
        judge = run.get_judge()
        samples = read_rows(out / "samples.jsonl")
        write_jsonl_atomic(scored_path, score_rows(samples, judge, cfg.scorer, progress=run.progress))
        run.results["judge_usage_scoring"] = judge.usage.as_dict()
        run.stages.finish("score", fp, t)
    scored = read_rows(scored_path)
    summary = run.results["scores"] = _summarise_scores(scored)
    run.console.print(f"scored {summary['scored']} of {len(scored)} responses ({summary['failed']} recorded as failed)")
    return fingerprint(fp, file_hash(scored_path)), scored


def _stage_pairs(run: _Run, fp_score: str, scored: list[dict]) -> tuple[str, Path, list[dict]]:
    """4. pairs: best vs worst per prompt and K-way rows; refuses to go on with no training row."""
    from alignkit.generate.jsonl import write_jsonl_atomic
    from alignkit.judge.pairs import build_pairs

    cfg, out = run.cfg, run.out
    pairs_path, kway_path = out / "pairs.jsonl", out / "kway.jsonl"
    fp = fingerprint(fp_score, cfg.pairs.model_dump())
    t = time.time()
    pairs, kway, stats = build_pairs(scored, min_scored=cfg.pairs.min_scored, prompt_format=cfg.pairs.prompt_format)
    write_jsonl_atomic(pairs_path, pairs)
    write_jsonl_atomic(kway_path, kway)
    run.stages.finish("pairs", fp, t)
    run.results["pairs"] = stats.as_dict()
    train_file, n_rows = (pairs_path, len(pairs)) if cfg.pairs.train_on == "pairs" else (kway_path, len(kway))
    run.console.print(f"{len(pairs)} pairs, {len(kway)} K-way rows: {json.dumps(stats.as_dict())}")
    if n_rows == 0:
        raise PipelineError(
            f"no training rows: {stats.skipped_too_few_scored} of {stats.prompts} prompts had fewer than "
            f"pairs.min_scored={cfg.pairs.min_scored} scored responses, {stats.all_tied} were all tied "
            f"(see {out / 'scored.jsonl'} for the judge's failures; raise sampling.k or lower pairs.min_scored)"
        )
    return fp, train_file, pairs


def _stage_train(run: _Run, fp_pairs: str, train_file: Path) -> str:
    """5. train: the preference recipe on the pairs. An interrupted training with unchanged inputs
    resumes from its last checkpoint (metrics.jsonl kept); changed inputs start over."""
    cfg = run.cfg
    model_dir = run.out / "model"
    fp = fingerprint(fp_pairs, file_hash(train_file), cfg.policy, cfg.training.model_dump())
    summary = run.stages.train("train", fp, model_dir, lambda resume: _train(cfg, train_file, model_dir, resume))
    if summary:
        run.results["training"] = summary
    return fp


def _stage_evaluate(run: _Run, fp_train: str, eval_rows: list[dict], do_eval: bool) -> None:
    """6. evaluate: the trained policy's greedy held-out answers scored next to the "before" ones;
    optionally the offline mini suite before and after."""
    cfg, out = run.cfg, run.out
    model_dir = str(out / "model")
    fp = fingerprint(fp_train, cfg.evaluation.model_dump(), cfg.judge.model_dump(), cfg.scorer.model_dump())
    eval_path = out / "evaluation.json"
    if run.stages.fresh("evaluate", fp, [eval_path]):
        t = time.time()
        evaluation: dict[str, Any] = {}
        if do_eval:
            evaluation.update(_judge_before_after(run, eval_rows, model_dir))
        elif cfg.evaluation.mini_suite:
            evaluation["mini_after"] = _mini_suite(cfg, model_dir, None, out / "mini_after")
        if cfg.evaluation.mini_suite:
            evaluation["mini_before"] = _mini_suite(cfg, cfg.policy, None, out / "mini_before")
        eval_path.write_text(json.dumps(evaluation, indent=1))
        run.stages.finish("evaluate", fp, t)
    run.results["evaluation"] = json.loads(eval_path.read_text())


def _judge_before_after(run: _Run, eval_rows: list[dict], model_dir: str) -> dict[str, Any]:
    from alignkit.generate.jsonl import write_jsonl_atomic
    from alignkit.judge.scoring import score_rows

    cfg, out = run.cfg, run.out
    evaluation: dict[str, Any] = {}
    engine = sampling_engine(model_dir, cfg.sampling)
    after = _greedy_answers(engine, eval_rows, cfg.evaluation.max_new_tokens, "after")
    write_jsonl_atomic(out / "eval_after_answers.jsonl", after)
    if cfg.evaluation.mini_suite:
        evaluation["mini_after"] = _mini_suite(cfg, model_dir, engine, out / "mini_after")
    del engine
    gc.collect()
    before = read_rows(out / "eval_before_answers.jsonl")
    judge = run.get_judge()
    usage_before = judge.usage.as_dict()
    rated = score_rows(before + after, judge, cfg.scorer, progress=run.progress)
    write_jsonl_atomic(out / "eval_scored.jsonl", rated)
    evaluation["judge_before"] = _summarise_scores(rated[: len(before)])
    evaluation["judge_after"] = _summarise_scores(rated[len(before) :])
    run.results["judge_usage_evaluation"] = _usage_delta(judge.usage.as_dict(), usage_before)
    return evaluation


def _stage_report(run: _Run, scored: list[dict], pairs: list[dict], started_all: float) -> None:
    """7. report: report.md with plots, and results.json."""
    from alignkit.pipelines.longreward_report import write_report

    t = time.time()
    run.results["stage_seconds"] = run.stages.timings
    run.results["reused_stages"] = run.stages.reused
    run.results["total_seconds"] = round(time.time() - started_all, 1)
    write_report(run.out, run.results, scored, pairs)
    run.stages.timings["report"] = round(time.time() - t, 1)
    (run.out / "results.json").write_text(json.dumps(run.results, indent=1, default=str))
    run.console.print(f"report: {run.out / 'report.md'}")


def _train(cfg: LongRewardPipelineConfig, train_file: Path, model_dir: Path, resume: bool = False) -> dict[str, Any]:
    from alignkit.train.preference import PreferenceConfig, train_preference
    from alignkit.train.run import DataConfig, ModelConfig

    tr = cfg.training
    pcfg = PreferenceConfig(
        model=ModelConfig(
            name_or_path=cfg.policy, gradient_checkpointing=tr.gradient_checkpointing, lora=tr.lora
        ),
        reference=tr.reference,
        data=DataConfig(train=str(train_file), limits=tr.data_limits),
        loss=tr.loss,
        nll_weight=tr.nll_weight,
        logit_temperature=tr.logit_temperature,
        train=tr.train.model_copy(update={"output_dir": str(model_dir)}),
    )
    return train_preference(pcfg, resume=resume)


def _mini_suite(cfg: LongRewardPipelineConfig, model: str, engine, out: Path) -> dict[str, Any]:
    from alignkit.evals.runner import EvalConfig, run_eval
    from alignkit.precision import resolve_dtype

    ecfg = EvalConfig(
        model=model,
        suite="mini",
        tasks=list(cfg.evaluation.mini_tasks),
        lengths=list(cfg.evaluation.mini_lengths),
        samples_per_length=cfg.evaluation.mini_samples_per_length,
        batch_size=cfg.sampling.batch_size,
        dtype=resolve_dtype(cfg.sampling.dtype, cfg.sampling.device),
        output_dir=str(out),
    )
    res = run_eval(ecfg, engine=engine)
    return {
        "tasks": {name: r["score"] for name, r in res["tasks"].items()},
        "task_mean": (res["aggregates"].get("task_mean") or {}).get("score"),
    }
