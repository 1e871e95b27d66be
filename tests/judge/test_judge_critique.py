"""Math-Critique parsing on hand-written judge outputs, and the critics' failure semantics."""

from __future__ import annotations

import pytest

from alignkit.judge.backends import BackendAnswer
from alignkit.judge.client import Judge, ParseError
from alignkit.judge.critique import (
    CriticConfig,
    CritiqueConfig,
    CritiqueItem,
    MathCritic,
    expected_critique,
    make_critic,
    parse_critique,
)

FULL = (
    "The student used the right method but made an arithmetic slip.\n"
    "{'factual correctness': 3, 'meets user needs': 4, 'logical coherence': 6, 'completeness': 5, "
    "'overall score': 4}"
)


def test_parse_reads_the_last_block_and_its_dimensions():
    text = "Compare with {'overall score': 9} from the example.\n" + FULL
    got = parse_critique(text)
    assert got.overall == 4.0
    assert got.dimensions == {"factual_correctness": 3, "user_needs": 4, "logical_coherence": 6, "completeness": 5}


def test_parse_official_chinese_keys_and_double_quotes():
    got = parse_critique('评语。{"事实正确性": 8, "满足用户需求": 8, "逻辑连贯性": 7, "完备性": 8, "综合得分": 8}')
    assert got.overall == 8.0 and got.dimensions["logical_coherence"] == 7


def test_parse_fallback_regex_when_the_block_lacks_the_overall_score():
    # the last block has no overall score; the official fallback finds it elsewhere in the text
    text = "'overall score': 6 is my verdict.\n{'completeness': 5}"
    got = parse_critique(text)
    assert got.overall == 6.0 and got.dimensions == {"completeness": 5}


@pytest.mark.parametrize(
    "text, message",
    [
        ("A fine answer, I would give it a high mark.", "no {...} score block"),
        ("{'factual correctness': 7, 'completeness': 6}", "no overall score"),
        ("{'overall score': 11}", "outside 1-10"),
        ("{'overall score': 0}", "outside 1-10"),
        ("{'overall score': 7, 'completeness': 12}", "outside 1-10"),
        ("{'overall score': 7.5}", "not an integer"),
        ("", "no {...} score block"),
    ],
)
def test_parse_refuses_missing_and_out_of_range_scores(text, message):
    with pytest.raises(ParseError, match=message.replace("{...}", r"\{\.\.\.\}")):
        parse_critique(text)


def test_integral_decimal_is_accepted():
    assert parse_critique("{'overall score': 7.0}").overall == 7.0


def test_expected_mode_ignores_zero_and_non_digits():
    import math

    dist = {"7": math.log(0.5), "9": math.log(0.25), "0": math.log(0.2), "x": math.log(0.05)}
    assert expected_critique(dist).overall == pytest.approx((7 * 0.5 + 9 * 0.25) / 0.75)


class ByAnswer:
    """Backend whose critique is chosen by the student answer inside the prompt."""

    kind, model_id, context_window, tokenizer = "fake", "by-answer", 4096, None

    def __init__(self):
        self.calls = []

    def call(self, messages, max_tokens, temperature, seed, stop=(), top_logprobs=0):
        self.calls.append(messages)
        prompt = messages[0]["content"]
        answer = prompt.rsplit("[Student answer]\n", 1)[1].split("\n[Critique]")[0]
        if len(messages) > 1:  # format-forced continuation after "{'overall score': "
            return BackendAnswer("5", 1, 1, "stop")
        if "GOOD" in answer:
            return BackendAnswer("Correct.\n{'overall score': 9}", 10, 5, "stop")
        if "WILD" in answer:
            return BackendAnswer("Hmm.\n{'overall score': 42}", 10, 5, "stop")
        return BackendAnswer("I cannot decide.", 10, 5, "stop")


def _items():
    return [
        CritiqueItem("a", "What is 2+3?", "2+3 = 5. The answer is 5.", "GOOD: 5"),
        CritiqueItem("b", "What is 2+3?", "2+3 = 5. The answer is 5.", "WILD guess"),
        CritiqueItem("c", "What is 2+3?", "2+3 = 5. The answer is 5.", "no idea"),
    ]


def test_math_critic_records_failures_and_never_scores_them():
    backend = ByAnswer()
    critic = MathCritic(Judge(backend, sleep=lambda s: None), CritiqueConfig(attempts=2))
    rows = critic.critique(_items())
    assert [r["status"] for r in rows] == ["scored", "failed", "failed"]
    assert rows[0]["score"] == 9.0
    assert rows[1]["score"] is None and "outside 1-10" in rows[1]["failure"]
    assert rows[2]["score"] is None and "no {...} score block" in rows[2]["failure"]
    # the first attempt at temperature 0, the retry above it: 1 + 2 + 2 calls
    assert len(backend.calls) == 5
    assert critic.judge.usage.parse_failures == 2


def test_math_critic_weak_judge_mode_continues_after_the_cue():
    backend = ByAnswer()
    critic = MathCritic(Judge(backend, sleep=lambda s: None), CritiqueConfig(force_format="direct"))
    rows = critic.critique(_items()[2:])
    assert rows[0]["status"] == "scored" and rows[0]["score"] == 5.0 and rows[0]["forced"]
    assert backend.calls[0][-1] == {"role": "assistant", "content": "{'overall score': "}


def test_verifier_critic_needs_a_checkable_answer():
    critic = make_critic(CriticConfig(kind="verifier", correct_score=9, wrong_score=2))
    items = [
        CritiqueItem("a", "q", "ref", "2 + 3 = 5. The answer is 5.", gold="5"),
        CritiqueItem("b", "q", "ref", "The answer is 6.", gold="5"),
        CritiqueItem("c", "q", "ref", "The answer is 6.", gold=None),
    ]
    rows = critic.critique(items)
    assert [r["score"] for r in rows] == [9.0, 2.0, None]
    assert rows[2]["status"] == "failed" and "no checkable answer" in rows[2]["failure"]


def test_critic_config_refuses_inverted_scores():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="must be below"):
        CriticConfig(correct_score=3, wrong_score=5)
