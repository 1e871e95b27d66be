"""``reward.verifier: ifeval[:fraction|all][:strict|loose]`` and ``verifiable`` on hand-made IFEval rows."""

from __future__ import annotations

import math

import pytest

from alignkit.errors import ConfigError, DataError
from alignkit.train import rl_rewards as R
from alignkit.train.rl_rollout import Sample

ROW = {"key": 1, "prompt": "Describe cats. No commas. Include \"purr\". End with \"Bye.\"",
       "instruction_id_list": ["punctuation:no_comma", "keywords:existence", "startend:end_checker"],
       "kwargs": [{}, {"keywords": ["purr"]}, {"end_phrase": "Bye."}]}


def _score(spec: str, text: str, finish_reason: str = "stop", row: dict = ROW) -> float:
    sample = Sample(prompt_index=0, prompt_ids=[1], response_ids=[2], text=text, finish_reason=finish_reason)
    return R.verifier_reward(spec)([row], [sample])[0]


@pytest.mark.parametrize("text,fraction_strict,all_strict,fraction_loose", [
    ("Cats purr. Bye.", 1.0, 1.0, 1.0),
    ("Cats, they purr. Bye.", 2 / 3, 0.0, 2 / 3),
    ("Cats sleep, a lot.", 0.0, 0.0, 0.0),
    # a first line the loose variants drop: strict sees the comma, loose does not
    ("Sure, here:\nCats purr. Bye.", 2 / 3, 0.0, 1.0),
])
def test_ifeval_reward_fraction_all_strict_loose(text, fraction_strict, all_strict, fraction_loose):
    assert _score("ifeval", text) == pytest.approx(fraction_strict)
    assert _score("ifeval:fraction:strict", text) == pytest.approx(fraction_strict)
    assert _score("ifeval:all", text) == all_strict
    assert _score("ifeval:loose", text) == pytest.approx(fraction_loose)
    assert _score("ifeval:all:loose", text) == (1.0 if fraction_loose == 1.0 else 0.0)
    assert _score("verifiable", text) == all_strict  # the built-in verifier: every instruction, strict


def test_a_response_cut_by_the_budget_scores_zero():
    assert _score("ifeval", "Cats purr. Bye.", "length") == 0.0
    assert _score("ifeval:loose", "Cats purr. Bye.", "length") == 0.0
    assert _score("verifiable", "Cats purr. Bye.", "length") == 0.0


def test_bad_specs_and_rows_are_refused():
    with pytest.raises(ConfigError, match="unknown option 'most'"):
        R.verifier_reward("ifeval:most")
    with pytest.raises(ConfigError, match="expected 'verifiable', 'ifeval"):
        R.verifier_reward("nocolon")
    with pytest.raises(DataError, match="unexpected argument"):
        _score("ifeval", "x", row={**ROW, "kwargs": [{"x": 1}, {"keywords": ["purr"]}, {"end_phrase": "Bye."}]})
    with pytest.raises(DataError, match="pre-IFEval"):
        _score("verifiable", "x", row={"id": "a", "prompt": "p", "constraint": {"type": "no_commas"}})


def test_user_function_spec_still_works_and_none_is_nan():
    assert math.isnan(_score("tests.train.test_ifeval_reward:_none", "x"))


def _none(row, text, finish_reason):
    return None
