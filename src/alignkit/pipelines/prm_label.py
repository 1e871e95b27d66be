"""``alignkit prm label``: Monte-Carlo step labels, Math-Shepherd style (Wang et al. 2024, arXiv 2312.08935).

For every solution (``source: rows``: the steps of stepwise rows; ``source: policy``: solutions the
policy samples for each problem, split at ``step_separator``) and every step ``k`` but the last,
the policy continues the prefix ``steps[:k]`` ``rollouts`` times through :mod:`alignkit.generate`'s
engine (the prefix is the start of the assistant's reply, so the model continues it); each rollout
is checked against the problem's verified answer with :func:`alignkit.data.mathgen.check_answer`.
The step's Monte-Carlo score is the fraction of rollouts that reach the answer; its label is
``score > 0`` (``mode: hard``, Math-Shepherd's HE) or the score itself (``mode: soft``, SE). The last
step needs no rollout: its score is whether the whole solution's final answer is right.

Input rows need ``prompt`` (or ``question``) and ``answer``; ``source: rows`` also needs
``completions`` (the steps) and no ``labels``. A row that already carries ``labels`` (validated like a
stepwise row's) is relabelled: its labels are kept as ``given_labels`` beside the Monte-Carlo ones, so
the two can be compared, and the summary counts such rows (``relabelled``). Output ``stepwise.jsonl``:
TRL stepwise rows plus ``answer``, ``id`` and ``mc`` (the scores), ready for ``alignkit prm``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from alignkit.config import StrictModel
from alignkit.data.mathgen import INSTRUCTION, check_answer
from alignkit.data.records import require
from alignkit.data.rows import check_step_labels, check_steps
from alignkit.errors import DataError
from alignkit.generate.options import EngineOptions, engine_from_options


class LabelSampling(StrictModel):
    """Decoding for rollouts (and for sampling solutions with ``source: policy``)."""

    temperature: float = 0.8
    """Sampling temperature (> 0: rollouts must differ to estimate a probability)."""
    top_p: float = 1.0
    """Nucleus sampling mass."""
    max_new_tokens: int = 128
    """Token budget of each rollout / solution."""
    seed: int = 0
    """Base seed: the same config gives the same rollouts."""


class PolicySampler(EngineOptions):
    """The policy that samples (``model``, engine options), and how (shared by ``prm label`` and ``bon``)."""

    sampling: LabelSampling = Field(default_factory=LabelSampling)
    limit: int | None = None
    """Use only the first N rows of data (null: all)."""
    progress: bool = True
    """Show a progress bar while generating."""


class PRMLabelConfig(PolicySampler):
    """``alignkit prm label``: Monte-Carlo step labels from policy rollouts."""

    data: str
    """JSONL rows with prompt (or question) and answer; source=rows also needs completions (steps); labels
    already there are kept as given_labels and replaced by the Monte-Carlo ones."""
    source: Literal["rows", "policy"] = "rows"
    """rows: label the given steps; policy: label solutions the policy samples for each problem."""
    solutions_per_problem: int = 2
    """source=policy: sampled solutions per problem."""
    rollouts: int = 8
    """Completions from each step prefix (N in Math-Shepherd)."""
    mode: Literal["hard", "soft"] = "hard"
    """hard: label = any rollout reaches the answer; soft: label = the fraction that do."""
    step_separator: str = "\n"
    """Joins steps into the reply prefix and splits sampled solutions into steps."""
    limit: int | None = None
    """Use only the first N rows of data (null: all)."""
    output_dir: str = "runs/prm-label"
    """Writes stepwise.jsonl and summary.json (the command saves the resolved config.yaml beside them)."""


def read_problems(path: str, need_steps: bool) -> list[dict[str, Any]]:
    """``{"prompt", "answer", "id", "steps"?}`` per row; a bad row names file:line:field."""
    from alignkit.generate.jsonl import read_jsonl

    out = []
    try:
        records = read_jsonl(path)
    except DataError as exc:
        raise DataError(str(exc)) from None
    for line, row in records:
        where = f"{path}:{line}"
        prompt = row.get("prompt", row.get("question"))
        if not isinstance(prompt, str) or not prompt.strip():
            raise DataError(f"{where}: field 'prompt': expected a non-empty string (or a 'question')")
        if "prompt" not in row:  # a bare mathgen question: state the answer format, as prompts do
            prompt = f"{prompt} {INSTRUCTION}"
        answer = row.get("answer")
        if not isinstance(answer, str) or not answer.strip():
            raise DataError(f"{where}: field 'answer': expected the verified final answer as a string")
        item = {"prompt": prompt, "answer": answer, "id": row.get("id", f"{Path(path).name}:{line}")}
        if need_steps:
            item["steps"] = check_steps(require(row, "completions", where), where)
            if "labels" in row:  # relabelled; the given labels are validated and kept beside the new ones
                check_step_labels(row["labels"], len(item["steps"]), where)
                item["given_labels"] = row["labels"]
        out.append(item)
    return out


def _params(cfg: PRMLabelConfig, n: int):
    from alignkit.generate.engine import SamplingParams

    s = cfg.sampling
    return SamplingParams(max_new_tokens=s.max_new_tokens, temperature=s.temperature, top_p=s.top_p, n=n,
                          seed=s.seed)


def sample_solutions(engine, problems: list[dict[str, Any]], cfg: PRMLabelConfig) -> list[dict[str, Any]]:
    """``source: policy``: one item per sampled solution with at least one step."""
    from alignkit.train.prm import split_steps

    results = engine.generate([p["prompt"] for p in problems], _params(cfg, cfg.solutions_per_problem),
                              progress=cfg.progress)
    out = []
    for p, res in zip(problems, results, strict=True):
        for j, c in enumerate(res.completions):
            steps = split_steps(c.text, cfg.step_separator)
            if steps:
                out.append({**p, "id": f"{p['id']}#{j}", "steps": steps})
    return out


def mc_scores(engine, items: Sequence[dict[str, Any]], cfg: PRMLabelConfig) -> list[list[float]]:
    """Monte-Carlo correctness of every step prefix of every item (module docstring)."""
    sep = cfg.step_separator
    requests, owners = [], []
    for i, item in enumerate(items):
        for k in range(1, len(item["steps"])):
            prefix = sep.join(item["steps"][:k]) + sep
            requests.append([{"role": "user", "content": item["prompt"]}, {"role": "assistant", "content": prefix}])
            owners.append((i, k - 1, prefix))
    scores = [[0.0] * len(item["steps"]) for item in items]
    if requests:
        results = engine.generate(requests, _params(cfg, cfg.rollouts), progress=cfg.progress)
        for (i, k, prefix), res in zip(owners, results, strict=True):
            hits = sum(check_answer(prefix + c.text, items[i]["answer"]) for c in res.completions)
            scores[i][k] = hits / len(res.completions)
    for i, item in enumerate(items):  # the last step: is the finished solution right?
        scores[i][-1] = float(check_answer(sep.join(item["steps"]), item["answer"]))
    return scores


def label_steps(cfg: PRMLabelConfig, engine=None) -> dict[str, Any]:
    """Run ``alignkit prm label``; ``engine`` (for tests) replaces the one built from ``cfg.model``."""
    from alignkit.errors import UserError
    from alignkit.generate.jsonl import write_jsonl_atomic

    if cfg.rollouts < 1 or cfg.solutions_per_problem < 1:
        raise UserError("rollouts and solutions_per_problem must be >= 1")
    problems = read_problems(cfg.data, need_steps=cfg.source == "rows")[: cfg.limit]
    engine = engine or engine_from_options(cfg)
    items = sample_solutions(engine, problems, cfg) if cfg.source == "policy" else problems
    scores = mc_scores(engine, items, cfg)
    rows = [{"prompt": it["prompt"], "completions": it["steps"],
             "labels": [s > 0 for s in sc] if cfg.mode == "hard" else sc,
             "answer": it["answer"], "id": it["id"], "mc": sc,
             **({"given_labels": it["given_labels"]} if "given_labels" in it else {})}
            for it, sc in zip(items, scores, strict=True)]
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl_atomic(out / "stepwise.jsonl", rows)
    n_steps = sum(len(s) for s in scores)
    summary = {"command": "prm label", "problems": len(problems), "solutions": len(items), "steps": n_steps,
               "rollouts": sum(len(s) - 1 for s in scores) * cfg.rollouts,
               "positive_steps": sum(x > 0 for s in scores for x in s),
               "solutions_correct": sum(s[-1] > 0 for s in scores),
               "relabelled": sum("given_labels" in it for it in items), "output_dir": str(out),
               "data": str(out / "stepwise.jsonl")}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary
