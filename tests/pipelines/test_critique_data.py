"""Critique-RFT selection and Critique-DPO pair construction on hand-built samples."""

from __future__ import annotations

from alignkit.pipelines.critique_data import build_critique_pairs, select_rft


def s(pid, k, text, score, status="scored", finish="stop"):
    return {"prompt_id": pid, "k": k, "prompt": [{"role": "user", "content": f"Q{pid}"}], "response": text,
            "finish_reason": finish, "status": status, "score": score if status == "scored" else None}


def test_rft_threshold_dedup_cap_and_counts():
    rows = [
        s("a", 0, "x = 4. The answer is 4.", 9),
        s("a", 1, "x  =  4.  The answer is 4.", 10),  # duplicate of k=0 up to whitespace, higher score
        s("a", 2, "So x is 4, the answer is 4.", 8),
        s("a", 3, "Answer: 4", 7),
        s("a", 4, "The answer is 5.", 3),  # below threshold
        s("a", 5, "The answer is 4 because", 9, finish="length"),  # truncated: never taught
        s("a", 6, "", 0, status="failed"),  # critic failure: not a score
        s("b", 0, "The answer is 1.", 2),
        s("b", 1, "   ", 9),  # empty
    ]
    kept, st = select_rft(rows, threshold=7, max_per_question=2)
    assert [(r["prompt_id"], r["k"]) for r in kept] == [("a", 1), ("a", 2)]  # best first, duplicate k=0 gone
    assert st.as_dict() == {"questions": 2, "samples": 9, "critic_failed": 1, "truncated_or_empty": 2,
                            "below_threshold": 2, "duplicates": 1, "over_cap": 1, "kept": 2,
                            "questions_with_kept": 1}
    kept, st = select_rft(rows, threshold=7, max_per_question=2, drop_truncated=False)
    assert st.truncated_or_empty == 1 and [r["k"] for r in kept] == [1, 5]  # ties: lower index first


def test_rft_normalized_dedup_ignores_case_and_punctuation():
    rows = [s("a", 0, "The answer is 4.", 9), s("a", 1, "the ANSWER is 4", 9), s("a", 2, "It is 4!", 9)]
    assert len(select_rft(rows, 7, 5, dedup="exact")[0]) == 3
    kept, st = select_rft(rows, 7, 5, dedup="normalized")
    assert [r["k"] for r in kept] == [0, 2] and st.duplicates == 1  # equal scores: the lower index stays


def test_pairs_need_a_high_answer_and_a_gap():
    rows = [
        # q1: best 9, worst 2 -> pair; second pair 8 vs 6 fails the gap of 3
        s("q1", 0, "A9", 9), s("q1", 1, "A6", 6), s("q1", 2, "A2", 2), s("q1", 3, "A8", 8),
        # q2: nothing reaches chosen_min
        s("q2", 0, "B5", 5), s("q2", 1, "B1", 1),
        # q3: all tied -> gap 0, no pair
        s("q3", 0, "C9", 9), s("q3", 1, "C9b", 9),
        # q4: the gap exists only to a failed / truncated sample -> no pair
        s("q4", 0, "D9", 9), s("q4", 1, "D1", 1, status="failed"), s("q4", 2, "D1b", 1, finish="length"),
        s("q4", 3, "D8", 8),
    ]
    pairs, st = build_critique_pairs(rows, chosen_min=7, min_gap=3, pairs_per_question=2)
    assert [(p["prompt_id"], p["chosen_score"], p["rejected_score"]) for p in pairs] == [("q1", 9, 2)]
    assert pairs[0]["chosen"][0]["content"] == "A9" and pairs[0]["rejected"][0]["content"] == "A2"
    assert st.as_dict() == {"questions": 4, "no_high": 1, "no_gap": 2, "identical": 0, "pairs": 1,
                            "questions_with_pairs": 1}


def test_pairs_per_question_and_ties_broken_by_index():
    rows = [s("q", 0, "hi-a", 9), s("q", 1, "hi-b", 9), s("q", 2, "lo-a", 1), s("q", 3, "lo-b", 1)]
    pairs, _ = build_critique_pairs(rows, chosen_min=7, min_gap=3, pairs_per_question=2)
    assert [(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs] == [
        ("hi-a", "lo-b"), ("hi-b", "lo-a")]


def test_identical_texts_make_no_pair():
    rows = [s("q", 0, "The answer is 4.", 9), s("q", 1, "The answer is 4.", 2)]
    pairs, st = build_critique_pairs(rows, chosen_min=7, min_gap=3)
    assert pairs == [] and st.identical == 1 and st.no_gap == 0
