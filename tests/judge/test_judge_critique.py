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


# ------------------------------------------------------------------------------ rubrics (issue 16)
WRONG = CritiqueItem("w", "What is 25% of 40?", "25% of 40 = 10. The answer is 10.", "25% of 40 is 4. The answer is 4.")
WRONG_ZH = CritiqueItem("z", "40 的 25% 是多少？", "40 × 25% = 10，答案是 10。", "40 的 25% 是 4，答案是 4。")


@pytest.mark.parametrize("item, lang", [(WRONG, "en"), (WRONG_ZH, "zh")])
def test_official_rubric_prompt_makes_a_wrong_result_an_essential_error(item, lang):
    from alignkit.judge.critique import critique_prompt

    prompt, got_lang = critique_prompt(CritiqueConfig(rubric="official"), item.question, item.reference, item.answer)
    assert got_lang == lang  # language: auto
    if lang == "en":
        assert "contains an essential factual error, or contains harmful content, the overall score must be 1 to 2" \
            in prompt
        assert "no serious error and is essentially harmless, but is of low quality" in prompt  # 3-4: no wrong result
        assert "the reference answer would score 8" in prompt and "'overall score': score}" in prompt
        answer_block = "[Assistant's answer begins]\n" + item.answer + "\n[Assistant's answer ends]"
    else:
        assert "存在本质性的事实错误或含有有害内容时，综合得分必须为 1 到 2 分" in prompt
        assert "参考答案可以得 8 分" in prompt and "'综合得分': 分数}" in prompt
        answer_block = "[助手的答案开始]\n" + item.answer + "\n[助手的答案结束]"
    assert prompt.rstrip().endswith(answer_block) and prompt.count(item.reference) == 1
    # the official judge has no worked example and no partial credit for a wrong result
    assert "Example" not in prompt and "示例" not in prompt and "above 4" not in prompt and "超过 4" not in prompt


@pytest.mark.parametrize("item, lang", [(WRONG, "en"), (WRONG_ZH, "zh")])
def test_partial_credit_rubric_prompt_keeps_todays_bands(item, lang):
    from alignkit.judge.critique import critique_prompt

    prompt, _ = critique_prompt(CritiqueConfig(rubric="partial_credit"), item.question, item.reference, item.answer)
    if lang == "en":
        assert "3-4: no serious error in the approach, but the result is wrong" in prompt
        assert "can never score above 4" in prompt and "Example" in prompt
        assert prompt.rstrip().endswith("[Student answer]\n" + item.answer + "\n[Critique]")
    else:
        assert "3-4：思路没有严重错误，但结果错误" in prompt and "示例" in prompt
        assert prompt.rstrip().endswith("[学生回答]\n" + item.answer + "\n[评语]")


def test_rubric_defaults_pipelines_partial_credit_mathusereval_official(tmp_path):
    from alignkit.config import load_config
    from alignkit.evals.mathusereval import MathUserEvalConfig
    from alignkit.pipelines.critic_train import CriticTrainConfig

    assert CritiqueConfig().rubric == "partial_credit" and CriticConfig().critique.rubric == "partial_credit"
    assert load_config(MathUserEvalConfig, None, ["data=q.jsonl"]).critique.rubric == "official"
    # a critique section given without a rubric keeps the evaluation's default
    cfg_file = tmp_path / "mue.yaml"
    cfg_file.write_text("data: q.jsonl\ncritique:\n  language: zh\n")
    assert load_config(MathUserEvalConfig, str(cfg_file), []).critique.rubric == "official"
    assert load_config(MathUserEvalConfig, None, ["data=q.jsonl", "critique.rubric=partial_credit"]) \
        .critique.rubric == "partial_credit"
    with pytest.raises(Exception, match="rubric"):
        CriticTrainConfig(labeler=CriticConfig(kind="judge", critique=CritiqueConfig(rubric="official")))


class RubricJudge:
    """Answers each rubric in its own output format: official dimension keys (Chinese for Chinese prompts)."""

    kind, model_id, context_window, tokenizer = "fake", "rubric-judge", 4096, None

    def __init__(self):
        self.calls = []

    def call(self, messages, max_tokens, temperature, seed, stop=(), top_logprobs=0):
        self.calls.append(messages)
        if top_logprobs:  # expected mode: the next-token distribution after the overall-score cue
            import math

            return BackendAnswer("2", 1, 1, "stop", [{"1": math.log(0.5), "2": math.log(0.5)}])
        if len(messages) > 1:  # direct mode: only the number after the cue
            return BackendAnswer("2", 1, 1, "stop")
        if "答案" in messages[0]["content"]:
            return BackendAnswer("答案 4 错误，应为 10。事实正确性：1 分……\n"
                                 "{'事实正确性': 1, '满足用户需求': 1, '逻辑连贯性': 4, '完备性': 3, '综合得分': 2}",
                                 20, 20, "stop")
        return BackendAnswer("The result 4 is wrong; it is 10. factual correctness: 1 ...\n"
                             "{'factual correctness': 1, 'meets user needs': 1, 'logical coherence': 4, "
                             "'completeness': 3, 'overall score': 2}", 20, 20, "stop")


@pytest.mark.parametrize("rubric", ["official", "partial_credit"])
@pytest.mark.parametrize("force_format, expected", [("off", 2.0), ("direct", 2.0), ("expected", 1.5)])
def test_scores_parse_on_the_same_1_to_10_scale_under_each_rubric(rubric, force_format, expected):
    backend = RubricJudge()
    critic = MathCritic(Judge(backend, sleep=lambda s: None), CritiqueConfig(rubric=rubric, force_format=force_format))
    rows = critic.critique([WRONG, WRONG_ZH])
    assert [r["status"] for r in rows] == ["scored", "scored"] and [r["score"] for r in rows] == [expected] * 2
    if force_format == "off":
        dims = {"factual_correctness": 1, "user_needs": 1, "logical_coherence": 4, "completeness": 3}
        assert rows[0]["dimensions"] == dims and rows[1]["dimensions"] == dims
    else:  # the weak-judge modes continue from the overall-score cue of the prompt's language
        assert sorted(c[-1]["content"] for c in backend.calls) == ["{'overall score': ", "{'综合得分': "]
    official = {"[Assistant's answer begins]" in c[0]["content"] or "[助手的答案开始]" in c[0]["content"]
                for c in backend.calls}
    assert official == {rubric == "official"}
    assert critic.identity()["critique"]["rubric"] == rubric  # the rubric is part of the critic's identity
