"""``alignkit pipeline self-critique``: ChatGLM-Math's Critique-RFT -> Critique-DPO (METHODS §4).

Stages (fingerprinted in ``stages.json`` by :mod:`alignkit.pipelines.stages`: a rerun of the same
``output_dir`` reuses every stage whose inputs and settings are unchanged):

1. **questions** — math problems with reference solutions and checkable answers from
   :mod:`alignkit.data.mathgen` (train and held-out splits by a hash of the problem id);
2. **rft_sample** / **rft_score** — N answers per training question from the starting policy, scored
   1-10 by the critic (``critic.kind``: ``verifier`` = exact-answer check, ``judge`` = the Math-Critique
   prompt through any judge, e.g. the policy itself in weak-judge mode); failed critiques are recorded;
3. **rft_data** / **rft_train** — keep answers scoring ``>= rft.threshold``, de-duplicate, cap per
   question (:func:`~alignkit.pipelines.critique_data.select_rft`), mix with general SFT rows (each row
   carries ``source``: ``rft`` or ``general``), and fine-tune the starting model (``alignkit.train.sft``);
4. **dpo_sample** / **dpo_score** / **dpo_pairs** / **dpo_train** — N answers per question from the RFT
   model, critic-scored; pairs from questions with both a high and a low answer and a minimum score
   gap (:func:`~alignkit.pipelines.critique_data.build_critique_pairs`); DPO + NLL on the chosen answer
   from the RFT model (``alignkit.train.preference``);
5. **evaluate** — base, RFT and DPO models: greedy answers to the held-out questions (exact-answer
   accuracy and critic score) and the verifiable-instruction pass rate (is language ability kept?);
6. **report** — ``report.md`` with the table and plots, ``results.json``.
"""

from __future__ import annotations

import gc
import json
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from alignkit.config import StrictModel
from alignkit.data.tokenize import DataPolicy
from alignkit.judge.critique import CriticConfig, CritiqueItem
from alignkit.models import DEFAULT_MODEL
from alignkit.pipelines.longreward import SamplingSection, sampling_engine
from alignkit.pipelines.stages import PipelineError, Stages, file_hash, fingerprint, read_rows
from alignkit.train.loop import TrainConfig
from alignkit.train.preference import DPOLoss, LossConfig, ReferenceConfig


class AnswerSampling(SamplingSection):
    """N answers per question from a policy (short math answers: fewer and shorter than LongReward's)."""

    k: int = Field(default=4, ge=2)
    """Answers per question."""
    temperature: float = Field(default=0.9, gt=0.0)
    """Sampling temperature (METHODS §4.3: about 0.8-1.0)."""
    max_new_tokens: int = Field(default=160, ge=1)
    """Answer budget (an answer cut by it is truncated; see rft.drop_truncated)."""


class QuestionsSection(StrictModel):
    """Math questions from the offline generator (alignkit.data.mathgen)."""

    train: int = Field(default=40, ge=1)
    """Training questions (RFT and DPO sample from these)."""
    heldout: int = Field(default=20, ge=1)
    """Held-out questions for the evaluation."""
    seed: int = 0
    """Generator seed (the split depends only on each problem's id)."""
    level: int = Field(default=1, ge=1, le=4)
    """Difficulty preset (mathgen.LEVELS: 1 = one operation, operands <= 10)."""
    categories: list[str] = Field(default_factory=lambda: ["arithmetic", "fractions", "word", "units"])
    """Problem categories, used in turn."""


class RFTSection(StrictModel):
    """Critique-RFT: which samples are kept and how the SFT runs (METHODS §4.3; counts unverified)."""

    threshold: float = 7.0
    """Keep answers with critic score >= threshold (verifier critic: correct = 10, wrong = 1)."""
    max_per_question: int = Field(default=2, ge=1)
    """Cap on the answers kept per question (highest score first)."""
    dedup: Literal["exact", "normalized"] = "exact"
    """Duplicate test: exact (whitespace collapsed) or normalized (also case and punctuation ignored)."""
    drop_truncated: bool = True
    """Never keep an answer cut by sampling.max_new_tokens (also applies to the DPO pairs)."""
    general_sft: str | None = "bundled"
    """General (non-math) SFT rows mixed in: 'bundled' (the verifiable-instruction SFT rows), a file, or null."""
    general_rows: int | None = Field(default=40, ge=0)
    """Use the first N general rows (null: all)."""
    renamed = {"data_policy": "data_limits"}  # "policy" is the model being trained
    data_limits: DataPolicy = Field(default_factory=lambda: DataPolicy(max_length=512, max_prompt_length=256))
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(lr=1e-5, batch_size=4, epochs=1))
    """Loop settings; output_dir is set by the pipeline (<output_dir>/rft_model)."""


class DPOSection(StrictModel):
    """Critique-DPO (METHODS §4.4; beta, NLL weight and the pair rule are unverified starting points)."""

    chosen_min: float = 7.0
    """A question is kept only if its best answer scores >= chosen_min."""
    min_gap: float = 3.0
    """Minimum critic-score gap between chosen and rejected."""
    pairs_per_question: int = Field(default=1, ge=1)
    """Pairs per question: i-th best with i-th worst while the gap holds."""
    on_no_pairs: Literal["error", "skip"] = "error"
    """No pair at all: stop with an error, or skip DPO (recorded in the results and the report)."""
    loss: LossConfig = Field(default_factory=lambda: DPOLoss(beta=0.1))
    nll_weight: float = 0.1
    """Auxiliary per-token NLL on the chosen answer (L = L_DPO + lambda * NLL(y_w))."""
    reference: ReferenceConfig = Field(default_factory=ReferenceConfig)
    renamed = {"data_policy": "data_limits"}  # "policy" is the model being trained
    data_limits: DataPolicy = Field(default_factory=lambda: DataPolicy(max_length=512, max_prompt_length=256))
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(lr=1e-6, batch_size=2))
    """Loop settings; output_dir is set by the pipeline (<output_dir>/dpo_model)."""


class EvaluationSection(StrictModel):
    """Held-out evaluation of the base, RFT and DPO models."""

    max_new_tokens: int = Field(default=160, ge=1)
    """Greedy answer budget for the held-out questions."""
    critic_score: bool = True
    """Also score the held-out answers with the critic (besides exact-answer accuracy)."""
    verifiable_prompts: int = Field(default=20, ge=0)
    """Held-out verifiable-instruction prompts for the pass rate (0: skip this check)."""


class SelfCritiqueConfig(StrictModel):
    """``alignkit pipeline self-critique --config FILE``."""

    output_dir: str = "runs/self_critique"
    """Every stage's files, stages.json (fingerprints), results.json and report.md go here."""
    policy: str = DEFAULT_MODEL
    """The starting model (embedded name, HF directory or hub id)."""
    questions: QuestionsSection = Field(default_factory=QuestionsSection)
    sampling: AnswerSampling = Field(default_factory=AnswerSampling)
    """N answers per question (k) for both RFT and DPO sampling."""
    critic: CriticConfig = Field(default_factory=CriticConfig)
    rft: RFTSection = Field(default_factory=RFTSection)
    dpo: DPOSection = Field(default_factory=DPOSection)
    evaluation: EvaluationSection = Field(default_factory=EvaluationSection)

    @model_validator(mode="after")
    def _consistent(self):
        for section in (self.rft, self.dpo):
            if "output_dir" in section.train.model_fields_set:
                raise ValueError("rft.train.output_dir / dpo.train.output_dir are set by the pipeline; remove them")
        if "preference" not in self.dpo.loss.rows:  # the pipeline builds pair rows (chosen/rejected)
            raise ValueError(f"dpo.loss.type {self.dpo.loss.type} does not train on pair rows")
        return self


# ----------------------------------------------------------------------------------------- stages
def make_questions(cfg: QuestionsSection) -> tuple[list[dict], list[dict]]:
    """(train, held-out) prompt rows: prompt_id, prompt, question, reference solution, gold answer."""
    from alignkit.data.mathgen import LEVELS, format_solution, make_splits, prompt_of

    steps, max_operand = LEVELS[cfg.level]
    try:
        train, held = make_splits(cfg.train, cfg.heldout, cfg.seed, categories=cfg.categories, steps=steps,
                                  max_operand=max_operand)
    except ValueError as exc:
        raise PipelineError(f"questions: {exc}") from None

    def row(p: dict) -> dict:
        return {"prompt_id": p["id"], "prompt": prompt_of(p), "question": p["question"],
                "category": p["category"], "reference": format_solution(p["steps"], p["answer"]),
                "answer": p["answer"], "program": p["program"]}

    return [row(p) for p in train], [row(p) for p in held]


def critic_scores(critic, rows: list[dict], progress: bool) -> list[dict]:
    """Rows + the critic's fields (status, score, critique, failure); failures stay unscored."""
    items = [CritiqueItem(str(r["id"]), r["question"], r["reference"], r["response"], r["answer"]) for r in rows]
    return [{**r, **{k: v for k, v in c.items() if k != "id"}}
            for r, c in zip(rows, critic.critique(items, progress=progress), strict=True)]


def general_rows(cfg: RFTSection) -> list[dict]:
    if cfg.general_sft is None or cfg.general_rows == 0:
        return []
    from alignkit.data.verifiable import DEMO_SFT

    path = DEMO_SFT if cfg.general_sft == "bundled" else Path(cfg.general_sft)
    rows = read_rows(Path(path)) if Path(path).is_file() else None
    if rows is None:
        raise PipelineError(f"rft.general_sft: {path} not found")
    rows = rows[: cfg.general_rows] if cfg.general_rows is not None else rows
    return [{**r, "source": "general"} for r in rows]


class _Run:
    """Shared state of one pipeline run: output dir, stage bookkeeping, the critic (built lazily)."""

    def __init__(self, cfg: SelfCritiqueConfig, progress: bool):
        self.cfg, self.progress = cfg, progress
        self.stages = Stages.open(cfg)
        self.console, self.out = self.stages.console, self.stages.out
        self._critic = None

    @property
    def critic(self):
        if self._critic is None:
            from alignkit.judge.critique import make_critic

            self._critic = make_critic(self.cfg.critic, cache_path=self.out / "critic_cache.sqlite")
        return self._critic

    def close(self) -> None:
        if self._critic is not None:
            self._critic.close()

    def sample(self, name: str, model: str, rows: list[dict], fp_in: str) -> tuple[list[dict], str]:
        from alignkit.generate.engine import SamplingParams
        from alignkit.generate.jsonl import write_jsonl_atomic
        from alignkit.judge.sampling import sample_responses

        path, s = self.out / f"{name}.jsonl", self.cfg.sampling
        fp = fingerprint(fp_in, model, s.model_dump())
        if self.stages.fresh(name, fp, [path]):
            t = time.time()
            engine = sampling_engine(model, s)
            params = SamplingParams(max_new_tokens=s.max_new_tokens, temperature=s.temperature, top_p=s.top_p)
            write_jsonl_atomic(path, sample_responses(engine, rows, s.k, params, seed=s.seed, progress=self.progress))
            del engine
            gc.collect()
            self.stages.finish(name, fp, t)
        return read_rows(path), fingerprint(fp, file_hash(path))

    def score(self, name: str, rows: list[dict], fp_in: str) -> tuple[list[dict], str]:
        from alignkit.generate.jsonl import write_jsonl_atomic

        path = self.out / f"{name}.jsonl"
        fp = fingerprint(fp_in, self.cfg.critic.model_dump())
        if self.stages.fresh(name, fp, [path]):
            t = time.time()
            write_jsonl_atomic(path, critic_scores(self.critic, rows, self.progress))
            self.stages.finish(name, fp, t)
        return read_rows(path), fingerprint(fp, file_hash(path))

    def train(self, name: str, fp_in: str, model_dir: Path, fn) -> tuple[dict, str]:
        """``fn(resume)`` trains into ``model_dir``; an interrupted training resumes from its checkpoint."""
        fp = fingerprint(fp_in)
        return self.stages.train(name, fp, model_dir, fn), fp


def _train_sft(cfg: SelfCritiqueConfig, data: Path, model_dir: Path, resume: bool) -> dict:
    from alignkit.train.run import DataConfig, ModelConfig
    from alignkit.train.sft import SFTConfig, train_sft

    return train_sft(SFTConfig(model=ModelConfig(name_or_path=cfg.policy),
                               data=DataConfig(train=str(data), limits=cfg.rft.data_limits),
                               train=cfg.rft.train.model_copy(update={"output_dir": str(model_dir)})),
                     resume=resume)


def _train_dpo(cfg: SelfCritiqueConfig, data: Path, start: Path, model_dir: Path, resume: bool) -> dict:
    from alignkit.train.preference import PreferenceConfig, train_preference
    from alignkit.train.run import DataConfig, ModelConfig

    d = cfg.dpo
    return train_preference(PreferenceConfig(
        model=ModelConfig(name_or_path=str(start)), reference=d.reference,
        data=DataConfig(train=str(data), limits=d.data_limits), loss=d.loss, nll_weight=d.nll_weight,
        train=d.train.model_copy(update={"output_dir": str(model_dir)})), resume=resume)


def evaluate_model(run: _Run, model: str, held: list[dict], tag: str) -> dict[str, Any]:
    """Greedy held-out answers: exact-answer accuracy, critic score, verifiable pass rate."""
    from alignkit.data.mathgen import check_answer
    from alignkit.data.verifiable import DEMO_HELDOUT, load_prompt_rows
    from alignkit.generate.engine import SamplingParams
    from alignkit.generate.jsonl import write_jsonl_atomic
    from alignkit.pipelines.verifiable_prefs import pass_rate

    ev, engine = run.cfg.evaluation, sampling_engine(model, run.cfg.sampling)
    res = engine.generate([r["prompt"] for r in held], SamplingParams(max_new_tokens=ev.max_new_tokens),
                          progress=run.progress)
    answers = [{**r, "id": f"{tag}-{r['prompt_id']}", "response": g.completions[0].text,
                "finish_reason": g.completions[0].finish_reason} for r, g in zip(held, res, strict=True)]
    out: dict[str, Any] = {"model": model, "n": len(answers)}
    out["correct"] = sum(check_answer(a["response"], a["answer"]) for a in answers)
    out["exact_accuracy"] = round(out["correct"] / len(answers), 4)
    if ev.verifiable_prompts:
        pr = pass_rate(engine, load_prompt_rows(str(DEMO_HELDOUT))[: ev.verifiable_prompts])
        out["verifiable"] = {k: pr[k] for k in ("n", "passed", "pass_rate")}
    del engine
    gc.collect()
    if ev.critic_score:
        answers = critic_scores(run.critic, answers, run.progress)
        ok = [a["score"] for a in answers if a["status"] == "scored"]
        out["critic"] = {"scored": len(ok), "failed": len(answers) - len(ok),
                         "mean": round(sum(ok) / len(ok), 3) if ok else None}
    write_jsonl_atomic(run.out / f"eval_{tag}.jsonl", answers)
    return out


# ----------------------------------------------------------------------------------------- the run
def run_self_critique(cfg: SelfCritiqueConfig, progress: bool = True) -> dict[str, Any]:
    """Run every stage; returns the results written to ``<output_dir>/results.json``."""
    from alignkit.generate.jsonl import write_jsonl_atomic
    from alignkit.pipelines.critique_data import build_critique_pairs, select_rft
    from alignkit.pipelines.self_critique_report import write_report

    run, started = _Run(cfg, progress), time.time()
    results: dict[str, Any] = {"config": cfg.model_dump(mode="json")}
    try:
        # 1. questions
        train, held = make_questions(cfg.questions)
        write_jsonl_atomic(run.out / "questions_train.jsonl", train)
        write_jsonl_atomic(run.out / "questions_heldout.jsonl", held)
        fp_q = fingerprint(file_hash(run.out / "questions_train.jsonl"), file_hash(run.out / "questions_heldout.jsonl"))
        results["questions"] = {"train": len(train), "heldout": len(held)}

        # 2-3. Critique-RFT
        samples, fp = run.sample("rft_sample", cfg.policy, train, fp_q)
        scored, fp = run.score("rft_score", samples, fp)
        kept, rft_stats = select_rft(scored, cfg.rft.threshold, cfg.rft.max_per_question, cfg.rft.dedup,
                                     cfg.rft.drop_truncated)
        rows = [{"prompt": r["prompt"], "completion": [{"role": "assistant", "content": r["response"]}],
                 "id": r["id"], "score": r["score"], "source": "rft"} for r in kept] + general_rows(cfg.rft)
        if not rows:
            raise PipelineError(f"RFT: no training rows (no sample reached rft.threshold and no general rows): "
                                f"{rft_stats.as_dict()}")
        write_jsonl_atomic(run.out / "rft_sft.jsonl", rows)
        results["rft"] = {"selection": rft_stats.as_dict(), "rows": len(rows),
                          "general_rows": sum(r["source"] == "general" for r in rows), "scores": _scores(scored)}
        rft_dir = run.out / "rft_model"
        fp_rft_data = fingerprint(fp, file_hash(run.out / "rft_sft.jsonl"), cfg.policy, cfg.rft.model_dump())
        results["rft"]["training"], fp_rft = run.train(
            "rft_train", fp_rft_data, rft_dir, lambda resume: _train_sft(cfg, run.out / "rft_sft.jsonl", rft_dir, resume))

        # 4. Critique-DPO
        samples, fp = run.sample("dpo_sample", str(rft_dir), train, fp_rft)
        scored, fp = run.score("dpo_score", samples, fp)
        d = cfg.dpo
        pairs, pair_stats = build_critique_pairs(scored, d.chosen_min, d.min_gap, d.pairs_per_question, cfg.rft.dedup,
                                                 cfg.rft.drop_truncated)
        write_jsonl_atomic(run.out / "dpo_pairs.jsonl", pairs)
        results["dpo"] = {"pairs": pair_stats.as_dict(), "scores": _scores(scored)}
        dpo_dir = run.out / "dpo_model"
        if not pairs and d.on_no_pairs == "error":
            raise PipelineError(f"DPO: no pair ({pair_stats.as_dict()}); sample more (sampling.k), lower "
                                f"dpo.min_gap / dpo.chosen_min, or set dpo.on_no_pairs=skip")
        if pairs:
            fp_pairs = fingerprint(fp, file_hash(run.out / "dpo_pairs.jsonl"), d.model_dump())
            results["dpo"]["training"], fp = run.train(
                "dpo_train", fp_pairs, dpo_dir, lambda resume: _train_dpo(cfg, run.out / "dpo_pairs.jsonl", rft_dir, dpo_dir, resume))
        else:
            results["dpo"]["skipped"] = "no pair (dpo.on_no_pairs=skip)"

        # 5. evaluate: one stage per model, so an interrupted evaluation keeps the models already done
        models = {"base": (cfg.policy, cfg.policy), "rft": (str(rft_dir), fp_rft)}
        models |= {"dpo": (str(dpo_dir), fp)} if pairs else {}
        evaluation = {}
        for tag, (model, fp_model) in models.items():
            path = run.out / f"eval_{tag}.json"
            fp_eval = fingerprint(fp_q, fp_model, cfg.evaluation.model_dump(), cfg.critic.model_dump())
            if run.stages.fresh(f"evaluate_{tag}", fp_eval, [path, run.out / f"eval_{tag}.jsonl"]):
                t = time.time()
                path.write_text(json.dumps(evaluate_model(run, model, held, tag), indent=1))
                run.stages.finish(f"evaluate_{tag}", fp_eval, t)
            evaluation[tag] = json.loads(path.read_text())
        (run.out / "evaluation.json").write_text(json.dumps(evaluation, indent=1))
        results["evaluation"] = evaluation
    finally:
        run.close()

    # 6. report
    results["stage_seconds"], results["reused_stages"] = run.stages.timings, run.stages.reused
    results["total_seconds"] = round(time.time() - started, 1)
    write_report(run.out, results)
    (run.out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    return results


def _scores(rows: list[dict]) -> dict[str, Any]:
    ok = [r["score"] for r in rows if r["status"] == "scored"]
    return {"n": len(rows), "scored": len(ok), "failed": len(rows) - len(ok),
            "mean": round(sum(ok) / len(ok), 3) if ok else None, "values": ok}
