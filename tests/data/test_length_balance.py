"""Length balancing of preference pairs and the length-biased synthetic set."""

from __future__ import annotations

import pytest

from alignkit.data.length_balance import balance_by_length, bucket_names, bucket_of
from alignkit.data.length_bias import length_biased_pairs


def test_buckets():
    assert bucket_names((1, 8, 32)) == ["0", "1-7", "8-31", "32+"]
    assert [bucket_of(d, (1, 8, 32)) for d in (0, 1, 7, 8, 31, 32, 500)] == [0, 1, 1, 2, 2, 3, 3]


def test_balancing_counts_on_a_hand_built_set():
    # (chosen_len, rejected_len): bucket "1-3" has 3 longer-wins and 1 shorter-wins; bucket "4+" has
    # 1 longer-wins and 2 shorter-wins; one tie; bucket "4+" also ...
    lengths = [(5, 4), (6, 4), (7, 5), (3, 4),  # diffs 1, 2, 2, 1: L, L, L, S
               (10, 2), (2, 10), (1, 9),  # diffs 8, 8, 8: L, S, S
               (4, 4)]  # tie
    keep, report = balance_by_length(lengths, edges=(1, 4), seed=0)
    assert report["buckets"] == {
        "0": {"longer_wins": 0, "shorter_wins": 0, "ties": 1, "kept": 1},
        "1-3": {"longer_wins": 3, "shorter_wins": 1, "ties": 0, "kept": 2},
        "4+": {"longer_wins": 1, "shorter_wins": 2, "ties": 0, "kept": 2},
    }
    assert report["rows_before"] == 8 and report["rows_after"] == len(keep) == 5
    assert keep == sorted(keep) and 7 in keep and 3 in keep and 4 in keep  # tie and each minority kept
    kept = [lengths[i] for i in keep]
    assert sum(c > r for c, r in kept) == sum(c < r for c, r in kept) == 2
    assert balance_by_length(lengths, edges=(1, 4), seed=0)[0] == keep  # deterministic
    with pytest.raises(ValueError, match="strictly increasing"):
        balance_by_length(lengths, edges=(4, 1))


def test_length_biased_pairs():
    rows = length_biased_pairs(400, bias=0.8, seed=1)
    assert rows == length_biased_pairs(400, bias=0.8, seed=1)
    frac = sum(r["longer_wins"] for r in rows) / len(rows)
    assert 0.74 < frac < 0.86
    for r in rows:
        c, j = r["chosen"][0]["content"], r["rejected"][0]["content"]
        assert (len(c) > len(j)) is r["longer_wins"]
    assert all(not r["longer_wins"] for r in length_biased_pairs(20, bias=0.0))
