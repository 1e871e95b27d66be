"""Length balancing of preference pairs (ChatGLM-RLHF's defence against length bias, METHODS.md §3.3).

A reward model trained on pairs where the longer response usually wins learns "longer is better".
Bucket-based balancing removes that shortcut from the training set:

1. bucket every pair by ``|len(chosen) - len(rejected)|`` (response tokens) with the edges
   ``[e_1, e_2, ...]``: bucket 0 is ``[0, e_1)``, bucket i is ``[e_i, e_{i+1})``, the last is open;
2. inside each bucket, count "longer wins" (chosen longer) and "shorter wins" (chosen shorter)
   pairs and keep a seeded random subset of the majority class the size of the minority class.

Pairs of equal length carry no length signal and are all kept. A bucket with one side empty loses
every pair of the other side (no balanced subset exists there); the counts say so.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

DEFAULT_EDGES = (1, 8, 32, 128)


def bucket_of(diff: int, edges: Sequence[int]) -> int:
    """Index of the bucket of an absolute length difference (see the module docstring)."""
    return sum(diff >= e for e in edges)


def bucket_names(edges: Sequence[int]) -> list[str]:
    """Human-readable bucket ranges: ``["0", "1-7", "8-31", ..., "128+"]`` for edges (1, 8, 32, 128)."""
    bounds = [0, *edges]
    names = []
    for i, lo in enumerate(bounds):
        hi = bounds[i + 1] - 1 if i + 1 < len(bounds) else None
        names.append(f"{lo}+" if hi is None else (str(lo) if hi == lo else f"{lo}-{hi}"))
    return names


def check_edges(edges: Sequence[int]) -> None:
    if not edges or any(e < 1 for e in edges) or list(edges) != sorted(set(edges)):
        raise ValueError(f"length bucket edges must be strictly increasing positive integers, got {list(edges)}")


def balance_by_length(lengths: Sequence[tuple[int, int]], edges: Sequence[int] = DEFAULT_EDGES,
                      seed: int = 0) -> tuple[list[int], dict[str, Any]]:
    """Indices of the pairs to keep (in input order) and the per-bucket counts.

    ``lengths[i] = (chosen_tokens, rejected_tokens)`` of pair ``i``. The report is
    ``{"edges", "rows_before", "rows_after", "buckets": {name: {"longer_wins", "shorter_wins",
    "ties", "kept"}}}``.
    """
    check_edges(edges)
    names = bucket_names(edges)
    groups: dict[str, dict[str, list[int]]] = {n: {"longer": [], "shorter": [], "ties": []} for n in names}
    for i, (c, r) in enumerate(lengths):
        side = "longer" if c > r else "shorter" if c < r else "ties"
        groups[names[bucket_of(abs(c - r), edges)]][side].append(i)
    rng = random.Random(f"balance:{seed}")
    keep: list[int] = []
    buckets = {}
    for name in names:
        g = groups[name]
        n = min(len(g["longer"]), len(g["shorter"]))
        kept = g["ties"] + sorted(rng.sample(g["longer"], n)) + sorted(rng.sample(g["shorter"], n))
        keep.extend(kept)
        buckets[name] = {"longer_wins": len(g["longer"]), "shorter_wins": len(g["shorter"]),
                         "ties": len(g["ties"]), "kept": len(kept)}
    keep.sort()
    return keep, {"edges": list(edges), "rows_before": len(lengths), "rows_after": len(keep), "buckets": buckets}
