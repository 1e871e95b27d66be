"""Evaluation inside training: the ``train.eval`` list of ``alignkit sft``, ``dpo`` and ``rl``.

Each item names a kind, a held-out file and its budget; the run evaluates them before training (step 0),
every ``train.eval_every`` steps and at the last step, and logs ``eval/<name>/<metric>`` into the step's
line of metrics.jsonl and the trackers (:func:`alignkit.train.loop.drive`). Answers are greedy, generated
from the live policy weights by the shared engine (the run's vLLM engine in ``alignkit rl`` when rollouts
use vLLM), under the training precision, on the main process.

An evaluation never changes the training trajectory: :func:`isolated` saves and restores the torch (CPU and
CUDA), python ``random`` and numpy RNG states and every module's train/eval mode around it, so a run with
``train.eval`` ends with the same weights as one without.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import Field, model_validator

from alignkit.config import StrictModel
from alignkit.errors import ConfigError
from alignkit.evals.mathusereval import MathUserEvalCritique
from alignkit.judge.client import JudgeConfig

Metrics = dict[str, float]
Task = Callable[[Any], Metrics]  # engine -> this item's metrics


class _Item(StrictModel):
    data: str
    """The held-out file (its format depends on the kind)."""
    name: str | None = None
    """The key under eval/<name>/<metric> (null: the kind); unique within train.eval."""
    limit: int | None = Field(default=None, ge=1)
    """Evaluate the first N rows of the file only (null: all)."""

    @property
    def label(self) -> str:
        return self.name or self.kind


class IfEvalItem(_Item):
    """IFEval rows (key, prompt, instruction_id_list, kwargs): the four official accuracies."""

    kind: Literal["ifeval"] = "ifeval"
    max_new_tokens: int = Field(default=1280, ge=1)
    """Answer budget (lm-eval's ifeval: 1280); greedy, chat template, no stop strings."""


class VerifiableItem(_Item):
    """Verifiable-instruction prompt rows (prompt, constraint): the demo's verifier pass rate."""

    kind: Literal["verifiable"] = "verifiable"
    max_new_tokens: int = Field(default=64, ge=1)
    """Answer budget (the demo's 64); an answer cut by it fails."""


class MiniSuiteItem(_Item):
    """One task file of the offline long-context mini suite (LongBench records): its LongBench score (0-100)."""

    kind: Literal["mini_suite"] = "mini_suite"
    task: str | None = None
    """The mini task whose prompt and metric score the file (null: the file's stem, as the suite names its files)."""
    max_new_tokens: int | None = Field(default=None, ge=1)
    """Answer budget (null: the task's own)."""
    max_length: int = Field(default=7500, ge=16)
    """Prompt tokens kept, longer prompts middle-truncated as LongBench does."""


class MathUserEvalItem(_Item):
    """MathUserEval rows (question, reference, category): the Math-Critique judge's mean scores (1-10)."""

    kind: Literal["mathusereval"] = "mathusereval"
    max_new_tokens: int = Field(default=512, ge=1)
    """Answer budget of the policy."""
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    """The judge (local:<model> or openai:<base_url>#<model>); calls cached in output_dir/evals/<name>/."""
    critique: MathUserEvalCritique = Field(default_factory=MathUserEvalCritique)
    """Prompting and parsing of the judge (rubric: official)."""


class RewardItem(_Item):
    """Prompt rows: the mean reward of the greedy answers, by an `alignkit rm` model or a verifier."""

    kind: Literal["reward"] = "reward"
    max_new_tokens: int = Field(default=64, ge=1)
    """Answer budget."""
    model: str | None = None
    """An `alignkit rm` output directory that scores the answers (set this or verifier)."""
    verifier: str | None = None
    """A verifier as reward.verifier names one (verifiable, or module:function); set this or model."""

    @model_validator(mode="after")
    def _one_scorer(self) -> RewardItem:
        if (self.model is None) == (self.verifier is None):
            raise ValueError("a kind=reward evaluation needs exactly one of model (an alignkit rm directory) "
                             "and verifier")
        return self


EvalItem = Annotated[IfEvalItem | VerifiableItem | MiniSuiteItem | MathUserEvalItem | RewardItem,
                     Field(discriminator="kind")]


def check_items(items: list[Any]) -> list[Any]:
    """Refuse two items with one name (their metrics would overwrite each other)."""
    seen: set[str] = set()
    for item in items:
        if item.label in seen:
            raise ValueError(f"train.eval: two evaluations are named {item.label!r}; give each a distinct name")
        seen.add(item.label)
    return items


# ------------------------------------------------------------------------------- isolation
@contextlib.contextmanager
def isolated(module: torch.nn.Module) -> Iterator[None]:
    """Run the body without a trace on training: RNG states (torch CPU and CUDA, python ``random``, numpy)
    and every submodule's train/eval mode come back as they were; no gradients are recorded."""
    import numpy as np

    modes = [(m, m.training) for m in module.modules()]
    cpu, py, npy = torch.get_rng_state(), random.getstate(), np.random.get_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    try:
        with torch.no_grad():
            yield
    finally:
        torch.set_rng_state(cpu)
        random.setstate(py)
        np.random.set_state(npy)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        for m, training in modes:
            m.training = training


# ------------------------------------------------------------------------------- the kinds
def _greedy(max_new_tokens: int):
    from alignkit.generate.engine import SamplingParams

    return SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0)


def _texts(engine, prompts: list, max_new_tokens: int) -> list[Any]:
    return [r.completions[0] for r in engine.generate(prompts, _greedy(max_new_tokens), progress=False)]


def _ifeval(item: IfEvalItem, ctx: dict) -> Task:
    from alignkit.evals.ifeval.run import read_rows
    from alignkit.evals.ifeval.scoring import score_row, summarise

    rows = read_rows(item.data, item.limit)

    def run(engine) -> Metrics:
        answers = _texts(engine, [r.prompt for r in rows], item.max_new_tokens)
        s = summarise([score_row(r, a.text) for r, a in zip(rows, answers, strict=True)])
        keys = ("prompt_level_strict_acc", "inst_level_strict_acc", "prompt_level_loose_acc", "inst_level_loose_acc")
        return {**{k: s[k] for k in keys}, "n": len(rows)}

    return run


def _verifiable(item: VerifiableItem, ctx: dict) -> Task:
    from alignkit.pipelines.verifiable_prefs import pass_rate
    from alignkit.train.rl_rollout import read_prompt_rows

    rows = read_prompt_rows(item.data, needs_constraint=True)[: item.limit]

    def run(engine) -> Metrics:
        r = pass_rate(engine, rows, _greedy(item.max_new_tokens))
        return {"pass_rate": r["pass_rate"], "truncated": r["truncated"], "n": r["n"]}

    return run


def _mini_suite(item: MiniSuiteItem, ctx: dict) -> Task:
    from alignkit.evals.longbench import dataset_score, load_jsonl, middle_truncate, score_prediction
    from alignkit.evals.registry import get_task

    task = get_task("mini", item.task or Path(item.data).stem)
    records = load_jsonl(item.data)[: item.limit]

    def run(engine) -> Metrics:
        from alignkit.generate.engine import SamplingParams

        newline = engine.tokenizer.encode("\n", add_special_tokens=False)[-1]
        params = SamplingParams(max_new_tokens=item.max_new_tokens or task.max_new_tokens, temperature=0.0,
                                min_new_tokens=task.min_new_tokens,
                                stop_token_ids=[newline] if task.stop_at_newline_token else [])
        prompts = [middle_truncate(task.render(r), engine.tokenizer, item.max_length)[0] for r in records]
        res = engine.generate(prompts, params, apply_chat_template=task.chat_template, progress=False)
        scores = [score_prediction(task, g.completions[0].text, r["answers"], r.get("all_classes"))
                  for r, g in zip(records, res, strict=True)]
        return {"score": dataset_score(scores), "n": len(records)}

    return run


def _mathusereval(item: MathUserEvalItem, ctx: dict) -> Task:
    from alignkit.evals.mathusereval import read_questions, summarise
    from alignkit.judge.client import judge_from_config
    from alignkit.judge.critique import CritiqueItem, MathCritic

    rows = read_questions(item.data, item.limit)
    critic: list[MathCritic] = []  # built at the first evaluation, kept for the run (a local judge loads once)

    def run(engine) -> Metrics:
        if not critic:
            cache = Path(ctx["output_dir"]) / "evals" / item.label / "judge_cache.sqlite"
            cache.parent.mkdir(parents=True, exist_ok=True)
            critic.append(MathCritic(judge_from_config(item.judge, cache), item.critique))
            ctx["closers"].append(critic[0].close)
        answers = _texts(engine, [[{"role": "user", "content": r["question"]}] for r in rows], item.max_new_tokens)
        crit = critic[0].critique([CritiqueItem(r["id"], r["question"], r["reference"], a.text)
                                   for r, a in zip(rows, answers, strict=True)])
        s = summarise([{**r, **c} for r, c in zip(rows, crit, strict=True)])
        return {k: s[k] for k in ("micro_mean", "macro_mean", "share_ge_7", "parse_failures", "n")}

    return run


def _reward(item: RewardItem, ctx: dict) -> Task:
    from alignkit.train import rl_rewards as R
    from alignkit.train.rl_rollout import read_prompt_rows, rollout

    rows = read_prompt_rows(item.data, needs_constraint=item.verifier == "verifiable")[: item.limit]
    fn = R.model_reward(item.model, ctx["device"]) if item.model else R.verifier_reward(item.verifier)

    def run(engine) -> Metrics:
        idx = list(range(len(rows)))
        samples = rollout(engine, rows, idx, idx, _greedy(item.max_new_tokens), 0, 0)
        scores = [float(x) for x in fn(rows, samples)]
        ok = [x for x in scores if math.isfinite(x)]
        return {"reward_mean": sum(ok) / len(ok) if ok else math.nan, "failed": len(scores) - len(ok),
                "response_length_mean": sum(len(s.response_ids) for s in samples) / max(len(samples), 1),
                "n": len(rows)}

    return run


BUILDERS: dict[str, Callable[[Any, dict], Task]] = {
    "ifeval": _ifeval, "verifiable": _verifiable, "mini_suite": _mini_suite,
    "mathusereval": _mathusereval, "reward": _reward,
}


class InLoopEvals:
    """The run's ``train.eval``: every item's data read (and checked) once, before training.

    ``engine_for(model)`` returns an engine generating with ``model``'s current weights; ``autocast()`` is the
    training precision's context. Calling the object with the live (unwrapped) model returns
    ``{"<name>/<metric>": value}`` for every item."""

    def __init__(self, items: list[Any], engine_for: Callable[[Any], Any], autocast: Callable[[], Any],
                 output_dir: str | Path, device: Any, processes: int = 1):
        if items and processes > 1:
            raise ConfigError(f"train.eval runs on one process; this run has {processes} (DDP / FSDP / "
                              "DeepSpeed): remove train.eval, or evaluate the saved model with `alignkit eval`")
        self.items, self.engine_for, self.autocast = items, engine_for, autocast
        self.ctx: dict[str, Any] = {"output_dir": str(output_dir), "device": device, "closers": []}
        self.tasks = [BUILDERS[item.kind](item, self.ctx) for item in items]

    def __bool__(self) -> bool:
        return bool(self.items)

    def __call__(self, model: torch.nn.Module) -> Metrics:
        out: Metrics = {}
        with isolated(model), self.autocast():
            engine = self.engine_for(model)
            for item, task in zip(self.items, self.tasks, strict=True):
                out.update({f"{item.label}/{k}": v for k, v in task(engine).items() if v is not None})
        return out

    def close(self) -> None:
        for close in self.ctx["closers"]:
            close()


# ------------------------------------------------------------------------------- report
COUNTS = ("n", "failed", "truncated", "parse_failures")  # bookkeeping, not curves


def eval_curves(logs: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """``{"<name>/<metric>": [(step, value), ...]}`` from metrics.jsonl rows (finite values, counts left out)."""
    curves: dict[str, list[tuple[int, float]]] = {}
    for row in logs:
        for key, v in row.items():
            if key.count("/") >= 2 and key.startswith("eval/") and key.rsplit("/", 1)[1] not in COUNTS \
                    and isinstance(v, int | float) and math.isfinite(v):
                curves.setdefault(key[len("eval/"):], []).append((row["step"], float(v)))
    return curves


def read_metrics(out: str | Path) -> list[dict[str, Any]]:
    import json

    path = Path(out) / "metrics.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def plot_evals(out: str | Path, png_name: str = "eval_curves.png") -> Path | None:
    """``out/eval_curves.png``: one panel per ``eval/<name>/<metric>`` of ``out/metrics.jsonl`` against the
    training step (None when the run logged no ``train.eval`` metrics)."""
    curves = eval_curves(read_metrics(out))
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(4, len(curves))
    rows = (len(curves) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.0 * rows), squeeze=False)
    flat = axes.flatten()
    for ax, (key, pts) in zip(flat, sorted(curves.items()), strict=False):
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
    for extra in flat[len(curves):]:
        extra.axis("off")
    fig.tight_layout()
    png = Path(out) / png_name
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png


def hf_evals(train_cfg: Any, acc: Any, tok: Any) -> InLoopEvals:
    """``train.eval`` of an offline recipe (sft, dpo): the shared HF engine around the live policy."""
    from alignkit.generate.engine import HFEngine

    return InLoopEvals(train_cfg.eval, lambda model: HFEngine(model, tok), acc.autocast, train_cfg.output_dir,
                       acc.device, acc.num_processes)


def finish(evals: InLoopEvals, out: Path, payload: dict[str, Any], main: bool) -> None:
    """Release the evaluations' judges; on the main process add the plot and the last values to ``payload``."""
    evals.close()
    if not evals or not main:
        return
    curves = eval_curves(read_metrics(out))
    payload["train_eval"] = {k: {"step": pts[-1][0], "value": pts[-1][1]} for k, pts in sorted(curves.items())}
    png = plot_evals(out)
    payload["train_eval_plot"] = str(png) if png else None
