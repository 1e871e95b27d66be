"""benchmarks/grpo_vs_trl.py: its prompts, refusals and one end-to-end run (both trainers) on a tiny random model."""

from __future__ import annotations

import json
import math

import pytest
from tests.benchmarks.test_dpo_vs_trl_bench import SCRIPT, _load, _tiny_model_dir

GRPO = SCRIPT.with_name("grpo_vs_trl.py")


@pytest.fixture(scope="module")
def bench():
    return _load(GRPO)


def _rendered(tok, text):
    return len(tok.apply_chat_template([{"role": "user", "content": text}], tokenize=True, add_generation_prompt=True,
                                       return_dict=False))


def test_prompts_are_heldout_ifeval_rows_padded_to_the_asked_length(bench, embedded_tokenizer):
    from alignkit.data.verifiable import is_heldout, verify

    short = bench.build_prompts(embedded_tokenizer, 6, 16, seed=0)
    assert len({r["prompt"] for r in short}) == 6 and short == bench.build_prompts(embedded_tokenizer, 6, 16, seed=0)
    for r in short:  # already longer than 16 tokens: the bare held-out prompt, a valid IFEval row
        assert r["instruction_id_list"] and is_heldout(r["key"], 0.25)
        assert verify("", r) in (True, False)  # the checkers accept the row
    long = bench.build_prompts(embedded_tokenizer, 3, 400, seed=0)
    for s, r in zip(short, long, strict=False):
        assert r["prompt"].endswith(s["prompt"]) and 380 <= _rendered(embedded_tokenizer, r["prompt"]) <= 400


@pytest.mark.parametrize("argv", [["--steps", "0"], ["--n", "1"], ["--precision", "fp16"], ["--prompt-tokens", "0"]])
def test_bad_arguments_exit_2(bench, argv):
    with pytest.raises(SystemExit) as exc:
        bench.main(argv)
    assert exc.value.code == 2


def test_end_to_end_on_a_tiny_random_model(bench, embedded_tokenizer, tmp_path):
    """Both trainers as whole processes: the same prompts every step, finite step-0 losses, tokens and RSS."""
    model_dir = _tiny_model_dir(embedded_tokenizer, tmp_path)
    out = tmp_path / "result.json"
    rc = bench.main(["--model", str(model_dir), "--steps", "2", "--prompts-per-step", "2", "--n", "2",
                     "--max-new-tokens", "4", "--prompt-tokens", "64", "--precision", "fp32", "--threads", "1",
                     "--json", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["same_prompts"] is True and all(56 <= n <= 64 for n in res["prompt_lengths"])
    ak, trl = res["alignkit"]["steps"], res["trl"]["steps"]
    assert len(ak) == len(trl) == 2
    for side in (ak, trl):
        assert math.isfinite(side[0]["loss"]) and all(len(s["prompts"]) == 4 and s["tokens"] > 4 * 56 for s in side)
    assert res["alignkit"]["peak_rss_kb"] > 0 and res["trl"]["peak_rss_kb"] > 0 and res["rss_ratio"] > 0
