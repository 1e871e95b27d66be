"""``alignkit critic train``: a Math-Critique critic fine-tuned from the policy itself (METHODS §4.2).

ChatGLM-Math trains its critic from the base LLM on (question, reference, answer) -> critique + score
rows whose labels come from people, a stronger LLM judge or an outcome check. Here the labels come from
the ``labeler`` (``verifier``: the exact-answer check; ``judge``: a stronger Math-Critique judge through
any judge spec). Stages (fingerprinted and resumable by :mod:`alignkit.pipelines.stages`):

1. **answers** — for each mathgen question, answers to criticise: ``synthetic`` = the reference
   solution and one slipped wrong solution (``mathgen.wrong_solution``: an arithmetic slip carried
   forward), or ``sampled`` = ``sampling.k`` answers from the policy;
2. **label** — the labeler criticises every answer; failed critiques are dropped and counted;
3. **train** — SFT rows: prompt = the Math-Critique prompt (``prompts/math_critique``), completion =
   the labeler's critique ending in the ``{'overall score': s}`` block (the verifier's critique is one
   sentence about the final answer); ``alignkit.train.sft`` from ``policy``;
4. **evaluate** — the policy before and the critic after, as local Math-Critique judges on held-out
   answers: agreement of ``score >= agree_at`` with the labeler's verdict, and parse failures.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from alignkit.config import StrictModel
from alignkit.data.tokenize import DataPolicy
from alignkit.judge.critique import CriticConfig, CritiqueConfig, CritiqueItem, MathCritic, critique_prompt
from alignkit.models import DEFAULT_MODEL
from alignkit.pipelines.self_critique import AnswerSampling, QuestionsSection, critic_scores, make_questions
from alignkit.pipelines.stages import PipelineError, Stages, file_hash, fingerprint, read_rows
from alignkit.train.loop import TrainConfig


class AnswersSection(StrictModel):
    """The answers the labeler criticises."""

    mode: Literal["synthetic", "sampled"] = "synthetic"
    """synthetic: the reference solution + one slipped wrong solution per question; sampled: policy samples."""
    sampling: AnswerSampling = Field(default_factory=AnswerSampling)
    """Policy sampling (mode=sampled)."""


class CriticEvalSection(StrictModel):
    """Before/after agreement of the policy and the trained critic with the labeler on held-out answers."""

    enabled: bool = True
    """Run the evaluation stage."""
    agree_at: float = 7.0
    """A critic score >= agree_at counts as 'correct'; agreement is measured against the labeler."""
    critique: CritiqueConfig = Field(default_factory=lambda: CritiqueConfig(force_format="direct", attempts=1))
    """How the policy and the trained critic are asked (direct: they only write the score)."""
    batch_size: int = Field(default=8, ge=1)
    """Sequences decoded together by the local critic."""


class CriticTrainConfig(StrictModel):
    """``alignkit critic train --config FILE``."""

    output_dir: str = "runs/critic"
    """Answers, labels, critic_sft.jsonl, critic_model/, results.json and report.md go here."""
    policy: str = DEFAULT_MODEL
    """The model the critic is trained from (ChatGLM-Math: the LLM itself)."""
    questions: QuestionsSection = Field(default_factory=QuestionsSection)
    answers: AnswersSection = Field(default_factory=AnswersSection)
    labeler: CriticConfig = Field(default_factory=CriticConfig)
    """Where the labels come from: verifier (exact-answer check) or a stronger judge (kind=judge)."""
    renamed = {"data_policy": "data_limits"}  # "policy" is the model being trained
    data_limits: DataPolicy = Field(default_factory=lambda: DataPolicy(max_length=1024, max_prompt_length=896))
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(lr=1e-5, batch_size=4, epochs=1))
    """Loop settings; output_dir is set by the pipeline (<output_dir>/critic_model)."""
    evaluation: CriticEvalSection = Field(default_factory=CriticEvalSection)

    @model_validator(mode="after")
    def _consistent(self):
        if self.labeler.kind == "judge" and self.labeler.critique.force_format == "expected":
            raise ValueError("labeler.critique.force_format=expected gives no critique text to train on; "
                             "use off, after_analysis or direct")
        if self.labeler.kind == "judge" and self.labeler.critique.rubric != self.evaluation.critique.rubric:
            raise ValueError(f"labeler.critique.rubric={self.labeler.critique.rubric} but the critic is trained and "
                             f"asked under evaluation.critique.rubric={self.evaluation.critique.rubric}; make "
                             "them the same")
        if "output_dir" in self.train.model_fields_set:
            raise ValueError("train.output_dir is set by the pipeline (<output_dir>/critic_model); remove it")
        return self


def synthetic_answers(rows: list[dict], seed: int) -> list[dict]:
    """Per question: the reference solution (k=0) and a slipped wrong one (k=1)."""
    from alignkit.data.mathgen import format_solution, wrong_solution

    rng = random.Random(f"critic:{seed}")
    out = []
    for r in rows:
        steps, answer, _ = wrong_solution(r, rng)
        for k, text in enumerate((r["reference"], format_solution(steps, answer))):
            out.append({**r, "id": f"{r['prompt_id']}-{k}", "k": k, "response": text, "finish_reason": "stop"})
    return out


def critique_rows(labelled: list[dict], critique: CritiqueConfig) -> list[dict]:
    """SFT rows: the Math-Critique prompt the critic is asked with (``critique``) -> the labeler's critique."""
    rows = []
    for r in labelled:
        if r["status"] != "scored":
            continue
        prompt, _ = critique_prompt(critique, r["question"], r["reference"], r["response"])
        text = r["critique"]
        if "{" not in text:  # the verifier's one-sentence critique: add the score block it implies
            text = f"The {text}.\n{{'overall score': {int(r['score'])}}}"
        rows.append({"prompt": [{"role": "user", "content": prompt}],
                     "completion": [{"role": "assistant", "content": text}],
                     "id": r["id"], "label": r["score"], "source": "critic"})
    return rows


def agreement(labels: list[dict], judged: list[dict], agree_at: float) -> dict[str, Any]:
    """How often the critic's verdict (score >= agree_at) matches the labeler's; failures counted apart.

    ``by_label`` splits it by the labeler's verdict (``correct`` / ``wrong`` answers), so a critic that
    gives every answer the same score shows up as 1.0 on one side and 0.0 on the other.
    """
    both = [(lab["score"], j["score"]) for lab, j in zip(labels, judged, strict=True)
            if lab["status"] == "scored" and j["status"] == "scored"]

    def summary(pairs: list[tuple[float, float]]) -> dict[str, Any]:
        return {"compared": len(pairs),
                "agreement": round(sum((a >= agree_at) == (b >= agree_at) for a, b in pairs) / len(pairs), 4)
                if pairs else None,
                "mean_score": round(sum(b for _, b in pairs) / len(pairs), 3) if pairs else None}

    scored = [j["score"] for j in judged if j["status"] == "scored"]
    return {"n": len(labels), "compared": len(both), "critic_failures": len(judged) - len(scored),
            "agreement": summary(both)["agreement"],
            "mean_score": round(sum(scored) / max(1, len(scored)), 3),
            "by_label": {"correct": summary([p for p in both if p[0] >= agree_at]),
                         "wrong": summary([p for p in both if p[0] < agree_at])}}


def _local_critic(model: str, ev: CriticEvalSection, cache: Path) -> MathCritic:
    from alignkit.judge.client import JudgeConfig, judge_from_config

    judge = judge_from_config(JudgeConfig(spec=f"local:{model}", batch_size=ev.batch_size,
                                          concurrency=ev.batch_size), cache_path=str(cache))
    return MathCritic(judge, ev.critique)


def run_critic_train(cfg: CriticTrainConfig, progress: bool = True) -> dict[str, Any]:
    """Answers -> labels -> SFT -> before/after agreement; returns what results.json holds."""
    from alignkit.generate.jsonl import write_jsonl_atomic
    from alignkit.judge.critique import make_critic
    from alignkit.pipelines.longreward import sampling_engine

    stages, started = Stages.open(cfg), time.time()
    out = stages.out
    train, held = make_questions(cfg.questions)

    def answers(rows: list[dict], name: str) -> Path:
        path = out / f"{name}.jsonl"
        a = cfg.answers
        fp = fingerprint(rows, cfg.policy, a.model_dump())
        if stages.fresh(name, fp, [path]):
            t = time.time()
            if a.mode == "synthetic":
                made = synthetic_answers(rows, cfg.questions.seed)
            else:
                from alignkit.generate.engine import SamplingParams
                from alignkit.judge.sampling import sample_responses

                s = a.sampling
                made = sample_responses(sampling_engine(cfg.policy, s), rows, s.k, SamplingParams(
                    max_new_tokens=s.max_new_tokens, temperature=s.temperature, top_p=s.top_p), seed=s.seed)
            write_jsonl_atomic(path, made)
            stages.finish(name, fp, t)
        return path

    def label(src: Path, name: str) -> list[dict]:
        path = out / f"{name}.jsonl"
        fp = fingerprint(file_hash(src), cfg.labeler.model_dump())
        if stages.fresh(name, fp, [path]):
            t = time.time()
            critic = make_critic(cfg.labeler, cache_path=out / "labeler.sqlite")
            try:
                write_jsonl_atomic(path, critic_scores(critic, read_rows(src), progress))
            finally:
                critic.close()
            stages.finish(name, fp, t)
        return read_rows(path)

    labelled = label(answers(train, "answers_train"), "labels_train")
    rows = critique_rows(labelled, cfg.evaluation.critique)
    if not rows:
        raise PipelineError("no critique rows: every labeler call failed (see labels_train.jsonl)")
    write_jsonl_atomic(out / "critic_sft.jsonl", rows)
    results: dict[str, Any] = {"labels": {"answers": len(labelled), "rows": len(rows),
                                          "labeler_failures": len(labelled) - len(rows),
                                          "by_score": _histogram(r["label"] for r in rows)}}
    model_dir = out / "critic_model"
    fp_train = fingerprint(file_hash(out / "critic_sft.jsonl"), cfg.policy, cfg.data_limits.model_dump(),
                            cfg.train.model_dump())
    results["training"] = stages.train("train", fp_train, model_dir, lambda resume: _train_critic(cfg, out, resume))

    if cfg.evaluation.enabled and held:
        held_labels = label(answers(held, "answers_heldout"), "labels_heldout")
        fp_eval = fingerprint(fp_train, file_hash(out / "labels_heldout.jsonl"), cfg.evaluation.model_dump())
        if stages.fresh("evaluate", fp_eval, [out / "evaluation.json"]):
            t = time.time()
            ev = {}
            for tag, model in (("policy", cfg.policy), ("critic", str(model_dir))):
                critic = _local_critic(model, cfg.evaluation, out / f"eval_{tag}.sqlite")
                try:
                    judged = critic.critique([CritiqueItem(r["id"], r["question"], r["reference"], r["response"])
                                              for r in held_labels], progress=progress)
                finally:
                    critic.close()
                ev[tag] = agreement(held_labels, judged, cfg.evaluation.agree_at)
                write_jsonl_atomic(out / f"eval_{tag}.jsonl", [
                    {"id": r["id"], "label": r["score"], **{k: v for k, v in j.items() if k != "id"}}
                    for r, j in zip(held_labels, judged, strict=True)])
            (out / "evaluation.json").write_text(json.dumps(ev, indent=1))
            stages.finish("evaluate", fp_eval, t)
        results["evaluation"] = json.loads((out / "evaluation.json").read_text())
    results["stage_seconds"], results["reused_stages"] = stages.timings, stages.reused
    results["total_seconds"] = round(time.time() - started, 1)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    (out / "report.md").write_text(_report(cfg, results), encoding="utf-8")
    return results


def _train_critic(cfg: CriticTrainConfig, out: Path, resume: bool) -> dict[str, Any]:
    from alignkit.train.run import DataConfig, ModelConfig
    from alignkit.train.sft import SFTConfig, train_sft

    return train_sft(SFTConfig(model=ModelConfig(name_or_path=cfg.policy),
                               data=DataConfig(train=str(out / "critic_sft.jsonl"), limits=cfg.data_limits),
                               train=cfg.train.model_copy(update={"output_dir": str(out / "critic_model")})),
                     resume=resume)


def _histogram(scores) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in scores:
        out[str(s)] = out.get(str(s), 0) + 1
    return dict(sorted(out.items()))


def _report(cfg: CriticTrainConfig, results: dict[str, Any]) -> str:
    lab = results["labels"]
    lines = ["# Math-Critique critic trained from the policy", "",
             f"Policy `{cfg.policy}`; labels from the {cfg.labeler.kind}; answers: {cfg.answers.mode}.", "",
             f"- critique rows: {lab['rows']} (labeler failures dropped: {lab['labeler_failures']}); "
             f"labels: {lab['by_score']}",
             f"- training: {results['training'].get('steps')} steps, final loss {results['training'].get('final_loss')}"]
    if "evaluation" in results:
        lines += ["", f"Held-out agreement with the labeler (score >= {cfg.evaluation.agree_at} = correct):", "",
                  "| model | compared | agreement | on correct answers | on wrong answers | critic failures "
                  "| mean score |", "|---|---|---|---|---|---|---|"]
        for tag, e in results["evaluation"].items():
            by = e.get("by_label", {})
            side = [f"{by[k]['agreement']} (n={by[k]['compared']}, mean {by[k]['mean_score']})" if k in by else "-"
                    for k in ("correct", "wrong")]
            lines.append(f"| {tag} | {e['compared']} | {e['agreement']} | {side[0]} | {side[1]} | "
                         f"{e['critic_failures']} | {e['mean_score']} |")
    return "\n".join(lines) + "\n"
