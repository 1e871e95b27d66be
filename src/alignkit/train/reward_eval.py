"""Reward-model evaluation: ``alignkit rm eval`` and the evaluation inside every ``alignkit rm`` run.

On preference pairs it reports

* ``accuracy`` (``r(chosen) > r(rejected)``) overall and per length-difference bucket
  (``by_length_bucket``, the buckets of :mod:`alignkit.data.length_balance`), and ``accuracy_longer_wins``
  / ``accuracy_shorter_wins``: a length-biased model is right when the longer side wins and wrong
  when the shorter side does;
* ``length_spearman``: Spearman's rank correlation between the reward of every scored response
  (chosen and rejected) and its length in tokens -- the length-bias figure (0: no monotone
  relation; near 1: the model mostly rewards length);
* ``reward_mean`` / ``reward_std`` over all scored responses, and the mean ``margin``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from alignkit.config import StrictModel
from alignkit.data.batching import by_completion, collate
from alignkit.data.length_balance import DEFAULT_EDGES, bucket_names, bucket_of, check_edges
from alignkit.data.tokenize import DataPolicy, TokenizedExample


def _ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties get the mean of the ranks they span."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rho (Pearson correlation of tie-averaged ranks); None when undefined (n < 2 or a constant)."""
    if len(x) != len(y):
        raise ValueError(f"spearman: {len(x)} vs {len(y)} values")
    if len(x) < 2:
        return None
    rx, ry = _ranks(x), _ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    vx = sum((a - mx) ** 2 for a in rx)
    vy = sum((b - my) ** 2 for b in ry)
    return None if vx == 0 or vy == 0 else cov / math.sqrt(vx * vy)


def reward_report(chosen: Sequence[float], rejected: Sequence[float], len_chosen: Sequence[int],
                  len_rejected: Sequence[int], edges: Sequence[int] = DEFAULT_EDGES) -> dict[str, Any]:
    """The metrics of the module docstring from per-pair rewards and response lengths (tokens)."""
    n = len(chosen)
    if not n == len(rejected) == len(len_chosen) == len(len_rejected):
        raise ValueError("reward_report: chosen, rejected and both length lists need one entry per pair")
    if n == 0:
        raise ValueError("reward_report: no pairs")
    check_edges(edges)
    wins = [c > r for c, r in zip(chosen, rejected, strict=True)]
    names = bucket_names(edges)
    by_bucket: dict[str, dict[str, Any]] = {}
    for name in names:
        by_bucket[name] = {"n": 0, "accuracy": None}
    hits: dict[str, int] = dict.fromkeys(names, 0)
    side: dict[str, list[bool]] = {"longer": [], "shorter": []}
    for w, lc, lr in zip(wins, len_chosen, len_rejected, strict=True):
        name = names[bucket_of(abs(lc - lr), edges)]
        by_bucket[name]["n"] += 1
        hits[name] += w
        if lc != lr:
            side["longer" if lc > lr else "shorter"].append(w)
    for name in names:
        if by_bucket[name]["n"]:
            by_bucket[name]["accuracy"] = hits[name] / by_bucket[name]["n"]
    rewards = [*chosen, *rejected]
    mean = sum(rewards) / len(rewards)
    std = math.sqrt(sum((r - mean) ** 2 for r in rewards) / len(rewards))
    return {
        "n": n,
        "accuracy": sum(wins) / n,
        "accuracy_longer_wins": sum(side["longer"]) / len(side["longer"]) if side["longer"] else None,
        "accuracy_shorter_wins": sum(side["shorter"]) / len(side["shorter"]) if side["shorter"] else None,
        "margin": sum(c - r for c, r in zip(chosen, rejected, strict=True)) / n,
        "reward_mean": mean,
        "reward_std": std,
        "length_spearman": spearman(rewards, [*len_chosen, *len_rejected]),
        "by_length_bucket": by_bucket,
    }


@torch.no_grad()
def score_pairs(model, examples: Sequence[TokenizedExample], pad_id: int, batch_size: int, device
                ) -> tuple[list[float], list[float]]:
    """Rewards of chosen and rejected for every pair (``model`` is a :class:`RewardForward`)."""
    was = model.training
    model.eval()
    chosen: list[float] = []
    rejected: list[float] = []
    for i in range(0, len(examples), batch_size):
        b = collate(list(examples[i : i + batch_size]), pad_id)
        r = by_completion(model(b["input_ids"].to(device), b["attention_mask"].to(device)).float().cpu(), 2)
        chosen += r[:, 0].tolist()
        rejected += r[:, 1].tolist()
    model.train(was)
    return chosen, rejected


def evaluate_pairs(model, examples: Sequence[TokenizedExample], pad_id: int, batch_size: int, device,
                   edges: Sequence[int] = DEFAULT_EDGES) -> dict[str, Any]:
    """Score ``examples`` and return :func:`reward_report` (lengths are completion tokens)."""
    chosen, rejected = score_pairs(model, examples, pad_id, batch_size, device)
    return reward_report(chosen, rejected, [len(e.completion_ids[0]) for e in examples],
                         [len(e.completion_ids[1]) for e in examples], edges)


class RMEvalConfig(StrictModel):
    """``alignkit rm eval``: score preference pairs with a trained reward model."""

    model: str
    """Reward-model directory (the output_dir of ``alignkit rm``)."""
    data: str
    """Preference pairs to score (prompt/chosen/rejected; any format ``alignkit rm`` reads)."""
    limits: DataPolicy = Field(default_factory=DataPolicy)
    """Lengths and what happens to degenerate rows (as ``data.limits`` in training)."""
    length_buckets: list[int] = Field(default_factory=lambda: list(DEFAULT_EDGES))
    """Edges of the |len(chosen) - len(rejected)| buckets, in tokens."""
    batch_size: int = 8
    """Pairs per forward pass."""
    output_file: str | None = None
    """Also write the report to this JSON file, the resolved config beside it (null: print only)."""
    renamed = {"policy": "limits", "output": "output_file"}


def eval_rm(cfg: RMEvalConfig) -> dict[str, Any]:
    """Score ``cfg.data`` with ``cfg.model``; returns the report (see the module docstring)."""
    from alignkit.data.rows import read_rows
    from alignkit.data.tokenize import tokenize_examples
    from alignkit.errors import DataError
    from alignkit.models import load_reward_model, load_tokenizer
    from alignkit.train.run import RewardForward

    check_edges(cfg.length_buckets)
    rows = read_rows(cfg.data, "preference")
    tok = load_tokenizer(cfg.model)
    examples, summary = tokenize_examples(rows, tok, cfg.limits, pairwise=True)
    if not examples:
        raise DataError(f"{cfg.data}: no pairs left after the data policy ({summary.as_dict()})")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = RewardForward(load_reward_model(cfg.model, device=device))
    report = evaluate_pairs(model, examples, tok.pad_token_id, cfg.batch_size, device, cfg.length_buckets)
    payload = {"command": "rm eval", "model": cfg.model, "data": cfg.data, "rows": summary.as_dict(), **report}
    if cfg.output_file:
        from alignkit.atomic import write_atomic

        Path(cfg.output_file).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(cfg.output_file, json.dumps(payload, indent=1, sort_keys=True))
    return payload
