"""``alignkit bon``: best-of-N selection curves and rejection-sampling SFT rows.

For every problem the policy samples ``n_max`` solutions **once**; a scorer rates each:

* ``rm`` -- an outcome reward model (``alignkit rm``), prompt as one user message;
* ``prm`` -- a process reward model (``alignkit prm``), steps split at its saved separator and
  aggregated (``min | last | prod``);
* ``verifier`` -- the answer checker itself (1 if the final answer is right, else 0): the oracle,
  whose curve is the coverage (pass@N) of the samples.

``scorer.verifier`` picks the task: ``answer`` (math problems with a final ``answer``, checked by
``mathgen.check_answer``), or instruction following on IFEval-format rows (``key``, ``prompt``,
``instruction_id_list``, ``kwargs``, e.g. ``src/alignkit/data/demo/verifiable_heldout.jsonl``) with a
verifier of ``alignkit rl`` -- ``ifeval[:fraction|all][:strict|loose]`` or ``verifiable``: a
``verifier`` scorer scores each sample with it (``ifeval``: the fraction of the row's instructions
followed, strict; a sample cut by the token budget scores 0), and a sample is *right* when it
finished within the budget and follows every instruction (IFEval prompt-level strict).

The held-out score for N is the fraction of selections whose final answer is right, averaged over
the ``n_max / N`` disjoint consecutive blocks of N samples of every problem (so N = 1 is the mean
accuracy of single samples, and every point reuses the same samples: the curve costs one sampling
pass). Selection is the argmax score, first index on ties; a sample the scorer could not score
(``None``) is never selected, and a block with no scored sample is a **failed** selection, counted
in ``selection_failures`` and scored as wrong. The selection over all ``n_max`` samples also gives
rejection-sampling SFT rows (ChatGLM-Math RFT, METHODS.md §4.3): the chosen sample of every problem
whose score reaches ``rft_min_score``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from alignkit.config import StrictModel
from alignkit.data.mathgen import check_answer
from alignkit.generate.options import engine_from_options
from alignkit.judge.client import JudgeConfig
from alignkit.pipelines.prm_label import PolicySampler, read_problems


class ScorerConfig(StrictModel):
    """What rates the samples."""

    type: Literal["rm", "prm", "verifier", "judge"] = "verifier"
    """rm: outcome reward model; prm: process reward model; verifier: the answer checker (oracle); judge:
    the Math-Critique critic (score 1-10 against the problem's answer) with the judge below."""
    verifier: str = "answer"
    """answer: math rows with a final 'answer' (mathgen's check); or IFEval-format rows with
    'ifeval[:fraction|all][:strict|loose]' / 'verifiable' (alignkit rl's verifiers): the verifier scorer's
    score, and right = finished and every instruction followed (strict). IFEval rows take scorer.type
    verifier or rm."""
    model: str | None = None
    """rm / prm: the trained model directory."""
    aggregation: Literal["min", "last", "prod"] | None = None
    """prm: override the aggregation saved with the model (null: use it)."""
    batch_size: int = 8
    """Sequences scored per forward pass."""
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    """type judge: local:<model> or openai:<base_url>#<model>; calls cached in output_dir/judge_cache.sqlite
    (a critique that cannot be parsed is a failed score, never picked)."""


class BoNConfig(PolicySampler):
    """``alignkit bon``: sample n_max per problem once, select by a scorer, report the curve."""

    data: str
    """Problems JSONL: prompt (or question) and answer per row (e.g. mathgen heldout_problems.jsonl); with an
    instruction-following scorer.verifier, IFEval rows (e.g. the demo's verifiable_heldout.jsonl)."""
    n_max: int = 16
    """Samples per problem (drawn once)."""
    ns: list[int] = Field(default_factory=lambda: [1, 2, 4, 8, 16])
    """Points of the curve; each must divide n_max."""
    scorer: ScorerConfig = Field(default_factory=ScorerConfig)
    rft_min_score: float | None = None
    """Rejection-sampling rows keep a problem's selected sample only if its score is >= this (null: all)."""
    output_dir: str = "runs/bon"
    """Writes samples.jsonl, curve.md, curve.png, rft_sft.jsonl and summary.json (+ the resolved config.yaml)."""


def pick_best(scores: Sequence[float | None]) -> int | None:
    """Index of the highest score (first on ties); None when no sample has a score."""
    best = None
    for i, s in enumerate(scores):
        if s is not None and (best is None or s > scores[best]):
            best = i
    return best


def bon_curve(scores: Sequence[Sequence[float | None]], correct: Sequence[Sequence[bool]],
              ns: Sequence[int]) -> dict[int, dict[str, float | int]]:
    """``{N: {"accuracy", "selections", "selection_failures"}}`` (block rule of the module docstring)."""
    out = {}
    for n in ns:
        hits = total = failures = 0
        for sc, ok in zip(scores, correct, strict=True):
            if len(sc) % n:
                raise ValueError(f"N={n} does not divide the {len(sc)} samples of a problem")
            for start in range(0, len(sc), n):
                j = pick_best(sc[start : start + n])
                total += 1
                if j is None:
                    failures += 1
                else:
                    hits += ok[start + j]
        out[n] = {"accuracy": hits / total if total else 0.0, "selections": total, "selection_failures": failures}
    return out


def score_samples(cfg: ScorerConfig, problems: list[dict[str, Any]], samples: list[list[str]],
                  correct: list[list[bool]], cache_path: Path | None = None,
                  finish: list[list[str]] | None = None) -> list[list[float | None]]:
    """Scores per problem and sample (``None`` where the scorer cannot score a sample); ``finish``: the
    samples' finish reasons (needed by an IFEval verifier)."""
    if cfg.type == "verifier" and cfg.verifier != "answer":
        import math

        from alignkit.train.rl_rewards import verifier_fn

        fn = verifier_fn(cfg.verifier)
        scores = [[fn(p, t, f) for t, f in zip(ss, fs, strict=True)]
                  for p, ss, fs in zip(problems, samples, finish, strict=True)]
        return [[None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v) for v in vs]
                for vs in scores]
    if cfg.type == "verifier":
        return [[float(c) for c in cs] for cs in correct]
    if cfg.type == "judge":
        return _critic_scores(cfg, problems, samples, cache_path)
    if cfg.model is None:
        raise ValueError(f"scorer.type={cfg.type} needs scorer.model (a trained model directory)")
    flat_p = [p["prompt"] for p, ss in zip(problems, samples, strict=True) for _ in ss]
    flat_s = [s for ss in samples for s in ss]
    if cfg.type == "rm":
        from alignkit.train.scorers import RewardScorer

        flat = RewardScorer(cfg.model, batch_size=cfg.batch_size).score(
            [[{"role": "user", "content": p}] for p in flat_p], flat_s)
    else:
        from alignkit.train.scorers import ProcessRewardScorer

        flat = ProcessRewardScorer(cfg.model, batch_size=cfg.batch_size, aggregation=cfg.aggregation).score(flat_p, flat_s)
    out, i = [], 0
    for ss in samples:
        out.append(list(flat[i : i + len(ss)]))
        i += len(ss)
    return out


def _critic_scores(cfg: ScorerConfig, problems: list[dict[str, Any]], samples: list[list[str]],
                   cache_path: Path | None) -> list[list[float | None]]:
    """Math-Critique overall scores (ChatGLM-Math's critic as the selector); failed critiques are None."""
    from alignkit.judge.critique import CriticConfig, CritiqueItem, make_critic

    critic = make_critic(CriticConfig(kind="judge", judge=cfg.judge), cache_path=cache_path)
    items = [CritiqueItem(id=f"{p['id']}#{j}", question=p["prompt"], reference=p["answer"], answer=s)
             for p, ss in zip(problems, samples, strict=True) for j, s in enumerate(ss)]
    try:
        rows = iter(critic.critique(items))
    finally:
        critic.close()
    return [[float(r["score"]) if r["status"] == "scored" else None for r in (next(rows) for _ in ss)]
            for ss in samples]


def _check(cfg: BoNConfig) -> None:
    from alignkit.errors import ConfigError

    bad = [n for n in cfg.ns if n < 1 or n > cfg.n_max or cfg.n_max % n]
    if bad:
        raise ConfigError(f"ns: {bad} must be between 1 and n_max={cfg.n_max} and divide it")
    if cfg.scorer.type in ("rm", "prm") and not cfg.scorer.model:
        raise ConfigError(f"scorer.model: required for scorer.type={cfg.scorer.type}")
    if cfg.scorer.type != "prm" and cfg.scorer.aggregation is not None:
        raise ConfigError("scorer.aggregation applies to scorer.type=prm only")
    if cfg.scorer.verifier != "answer":
        from alignkit.train.rl_rewards import verifier_fn

        verifier_fn(cfg.scorer.verifier)  # an unknown spec is refused before sampling
        if cfg.scorer.type in ("prm", "judge"):
            raise ConfigError(f"scorer.type={cfg.scorer.type} scores math solutions against an answer; with "
                              f"scorer.verifier={cfg.scorer.verifier} (IFEval rows) use verifier or rm")


def _plot(curve: dict[int, dict[str, Any]], path: Path, label: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = sorted(curve)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(ns, [curve[n]["accuracy"] for n in ns], marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.set_xlabel("N (samples per problem)")
    ax.set_ylabel("held-out accuracy of the selection")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _read_rows(cfg: BoNConfig) -> list[dict[str, Any]]:
    """Math problems (scorer.verifier answer) or validated IFEval rows (``id`` = their key)."""
    if cfg.scorer.verifier == "answer":
        return read_problems(cfg.data, need_steps=False)
    from alignkit.data.verifiable import load_prompt_rows

    return [{**r, "id": r["key"]} for r in load_prompt_rows(cfg.data)]


def _correct(cfg: BoNConfig, problems: list[dict[str, Any]], samples: list[list[str]],
             finish: list[list[str]]) -> list[list[bool]]:
    """Right answers: the math answer check, or (IFEval rows) finished and every instruction followed."""
    if cfg.scorer.verifier == "answer":
        return [[check_answer(t, p["answer"]) for t in ss] for p, ss in zip(problems, samples, strict=True)]
    from alignkit.data.verifiable import verify

    return [[f == "stop" and verify(t, p) for t, f in zip(ss, fs, strict=True)]
            for p, ss, fs in zip(problems, samples, finish, strict=True)]


def run_best_of_n(cfg: BoNConfig, engine=None) -> dict[str, Any]:
    """Run ``alignkit bon``; ``engine`` (for tests) replaces the one built from ``cfg.model``."""
    from alignkit.generate.engine import SamplingParams
    from alignkit.generate.jsonl import write_jsonl_atomic

    _check(cfg)
    problems = _read_rows(cfg)[: cfg.limit]
    engine = engine or engine_from_options(cfg)
    s = cfg.sampling
    params = SamplingParams(max_new_tokens=s.max_new_tokens, temperature=s.temperature, top_p=s.top_p,
                            n=cfg.n_max, seed=s.seed)
    results = engine.generate([p["prompt"] for p in problems], params, progress=cfg.progress)
    samples = [[c.text for c in r.completions] for r in results]
    finish = [[c.finish_reason for c in r.completions] for r in results]
    correct = _correct(cfg, problems, samples, finish)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    scores = score_samples(cfg.scorer, problems, samples, correct, cache_path=out / "judge_cache.sqlite",
                           finish=finish)
    curve = bon_curve(scores, correct, cfg.ns)
    write_jsonl_atomic(out / "samples.jsonl", [
        {"id": p["id"], "prompt": p["prompt"], "answer": p.get("answer"), "samples": ss, "correct": ok, "scores": sc}
        for p, ss, ok, sc in zip(problems, samples, correct, scores, strict=True)])
    rft = []
    for p, ss, sc in zip(problems, samples, scores, strict=True):
        j = pick_best(sc)
        if j is not None and (cfg.rft_min_score is None or sc[j] >= cfg.rft_min_score):
            rft.append({"prompt": [{"role": "user", "content": p["prompt"]}],
                        "completion": [{"role": "assistant", "content": ss[j]}], "id": p["id"], "score": sc[j]})
    write_jsonl_atomic(out / "rft_sft.jsonl", rft)
    label = cfg.scorer.type + (f" ({Path(cfg.scorer.model).name})" if cfg.scorer.model else
                               f" ({cfg.scorer.judge.spec})" if cfg.scorer.type == "judge" else
                               f" ({cfg.scorer.verifier})" if cfg.scorer.verifier != "answer" else "")
    table = ["| N | held-out accuracy | selections | failed selections |", "| --- | --- | --- | --- |"]
    table += [f"| {n} | {c['accuracy']:.3f} | {c['selections']} | {c['selection_failures']} |" for n, c in curve.items()]
    (out / "curve.md").write_text(f"Best-of-N with scorer {label}, {len(problems)} problems\n\n" + "\n".join(table) + "\n")
    _plot(curve, out / "curve.png", label)
    summary = {"command": "bon", "problems": len(problems), "n_max": cfg.n_max, "scorer": label,
               "curve": {str(n): c for n, c in curve.items()}, "rft_rows": len(rft),
               "sample_accuracy": sum(map(sum, correct)) / max(1, sum(map(len, correct))), "output_dir": str(out)}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary
