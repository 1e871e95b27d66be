"""The LongBench v1 protocol (``LongBench/pred.py`` and ``eval.py``), METHODS §6.3-6.4.

Prediction: ``prompt = template.format(context, input)``; if the prompt has more than
``max_length`` tokens keep the first and last ``int(max_length/2)`` tokens, decode each half with
``skip_special_tokens=True`` and concatenate; *then* apply the chat template (except for the six
raw-completion datasets); decode greedily for ``max_new_tokens``.

Scoring: first-line cut for the few-shot datasets, ``max`` over the ground truths, dataset score
``round(100 * mean, 2)``; LongBench-E buckets by the record's ``length`` field; category score =
mean of its datasets, language average = mean of the six category scores (Code shared by EN/ZH).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from alignkit.data.records import iter_objects
from alignkit.errors import DataError
from alignkit.evals.metrics import first_line, get_metric
from alignkit.evals.registry import TaskSpec

LONGBENCH_E_BUCKETS = ("0-4k", "4-8k", "8k+")
CATEGORIES = (
    "Single-Doc QA",
    "Multi-Doc QA",
    "Summarization",
    "Few-shot Learning",
    "Synthetic Tasks",
    "Code Completion",
)
TRUNCATION_SIDE = "middle"




GENERATION_SEED = 42  # pred.py seed_everything(42); greedy decoding makes it irrelevant but it is recorded


def default_max_length(context_window: int) -> int:
    """LongBench's ``model2maxlen`` rule: window rounded down to thousands, minus 500.

    4096 -> 3500, 8192 -> 7500, 16384 -> 15500, 32768 -> 31500 (the values in model2maxlen.json).
    """
    if context_window < 1500:
        raise ValueError(f"context window {context_window} is too small for LongBench prompts")
    return (context_window // 1000) * 1000 - 500


def middle_truncate(prompt: str, tokenizer: Any, max_length: int) -> tuple[str, int, bool]:
    """Token-level middle truncation exactly as ``pred.py``.

    Returns ``(prompt, n_tokens_before, truncated)``. ``n_tokens_before`` counts the tokens of the
    untruncated prompt as the reference does (``tokenizer(prompt)``, special tokens included).
    """
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2, got {max_length}")
    ids = tokenizer(prompt, truncation=False)["input_ids"]
    if len(ids) <= max_length:
        return prompt, len(ids), False
    half = int(max_length / 2)
    head = tokenizer.decode(ids[:half], skip_special_tokens=True)
    tail = tokenizer.decode(ids[-half:], skip_special_tokens=True)
    return head + tail, len(ids), True


def score_prediction(task: TaskSpec, prediction: str, answers: Sequence[str], all_classes: Any) -> float:
    """One sample's score: optional first-line cut, then ``max`` of the metric over all answers."""
    if not isinstance(prediction, str):
        raise TypeError(f"{task.name}: prediction must be a str, got {type(prediction).__name__}")
    if task.first_line:
        prediction = first_line(prediction)
    fn = get_metric(task.metric).fn
    score = 0.0
    for gt in answers:
        score = max(score, fn(prediction, gt, all_classes=all_classes))
    return score


def dataset_score(scores: Sequence[float]) -> float | None:
    """``round(100 * mean, 2)``; ``None`` for no samples (the reference would print nan)."""
    if not scores:
        return None
    return round(100 * sum(scores) / len(scores), 2)


def longbench_e_bucket(length: int) -> str:
    """LongBench-E bucket of a record's ``length`` (words for EN/code, characters for ZH)."""
    if length < 4000:
        return "0-4k"
    if length < 8000:
        return "4-8k"
    return "8k+"


def mean_or_none(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def leaderboard(task_scores: dict[str, float | None], tasks: dict[str, TaskSpec]) -> dict[str, Any]:
    """Category scores per language and the language averages, as in the LongBench README.

    A language average is reported only when all six categories have a score; otherwise it is
    ``None`` with the missing categories listed (a partial average is not the leaderboard number).
    """
    out: dict[str, Any] = {}
    for lang in ("en", "zh"):
        if not any(t.language == lang and task_scores.get(n) is not None for n, t in tasks.items()):
            continue  # the shared Code category alone does not make a language table
        cats: dict[str, dict[str, Any]] = {}
        for cat in CATEGORIES:
            members = [
                n
                for n, t in tasks.items()
                if t.category == cat and t.language in (lang, "code") and task_scores.get(n) is not None
            ]
            if members:
                cats[cat] = {"score": mean_or_none(task_scores[n] for n in members), "members": members}
        missing = [c for c in CATEGORIES if c not in cats]
        avg = None if missing or not cats else sum(c["score"] for c in cats.values()) / len(CATEGORIES)
        if cats:
            out[lang] = {"categories": cats, "avg": avg, "missing_categories": missing}
    return out


REQUIRED_FIELDS = {"input": str, "context": str, "answers": list, "length": int}


def validate_record(rec: Any, where: str) -> dict:
    """Check one LongBench record; errors name the file, line and field."""
    if not isinstance(rec, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    for field, typ in REQUIRED_FIELDS.items():
        if field not in rec:
            raise DataError(f"{where}: field {field!r}: missing")
        if not isinstance(rec[field], typ) or (typ is int and isinstance(rec[field], bool)):
            raise DataError(f"{where}: field {field!r}: expected {typ.__name__}, got {type(rec[field]).__name__}")
    if not rec["answers"] or not all(isinstance(a, str) for a in rec["answers"]):
        raise DataError(f"{where}: field 'answers': expected a non-empty list of strings")
    classes = rec.get("all_classes")
    if classes is not None and (
        not isinstance(classes, list) or not all(isinstance(c, str) for c in classes)
    ):
        raise DataError(f"{where}: field 'all_classes': expected null or a list of strings")
    return rec


def load_jsonl(path: str | Path) -> list[dict]:
    """Read LongBench-format JSONL, validating every line (no partial results on bad input)."""
    return [validate_record(rec.value, rec.where) for rec in iter_objects(path)]


def find_task_file(root: str | Path, name: str, longbench_e: bool) -> Path:
    """``<root>/<name>[_e].jsonl`` or ``<root>/data/<name>[_e].jsonl`` (the unzipped data.zip layout)."""
    root = Path(root)
    fname = f"{name}_e.jsonl" if longbench_e else f"{name}.jsonl"
    for cand in (root / fname, root / "data" / fname):
        if cand.is_file():
            return cand
    raise FileNotFoundError(
        f"{root}: no {fname} (looked in {root} and {root / 'data'}); download LongBench's data.zip and unzip it there"
    )
