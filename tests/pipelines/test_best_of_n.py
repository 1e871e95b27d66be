"""Best-of-N: argmax selection, monotone oracle curve, the pipeline's outputs and RFT rows."""

from __future__ import annotations

import json
import random

import pytest
from reward_fakes import RuleEngine

from alignkit.config import load_config
from alignkit.pipelines.best_of_n import BoNConfig, bon_curve, pick_best, run_best_of_n


def test_pick_best_is_the_argmax():
    assert pick_best([0.1, 0.9, 0.3]) == 1
    assert pick_best([0.5, 0.5]) == 0  # first on ties
    assert pick_best([None, -2.0, None, -1.0]) == 3  # unscored samples are never picked
    assert pick_best([None, None]) is None


def test_curve_hand_values_and_failures():
    scores = [[0.2, 0.9, 0.1, 0.4], [None, None, 0.3, 0.1]]
    correct = [[True, False, False, True], [True, True, False, True]]
    curve = bon_curve(scores, correct, [1, 2, 4])
    # N=1: T F F T | failed failed F T -> 3 of 8 (a failed selection is wrong, whatever the sample)
    assert curve[1]["accuracy"] == pytest.approx(3 / 8) and curve[1]["selection_failures"] == 2
    # N=2 blocks: [0.2,0.9]->F, [0.1,0.4]->T, [None,None]->failed, [0.3,0.1]->F
    assert curve[2] == {"accuracy": 0.25, "selections": 4, "selection_failures": 1}
    assert curve[4]["accuracy"] == 0.0  # 0.9 picks a wrong one; 0.3 picks a wrong one
    with pytest.raises(ValueError, match="does not divide"):
        bon_curve(scores, correct, [3])


def test_oracle_curve_is_monotone():
    rng = random.Random(0)
    correct = [[rng.random() < p for _ in range(16)] for p in [0.05, 0.2, 0.5, 0.8] * 5]
    curve = bon_curve([[float(c) for c in cs] for cs in correct], correct, [1, 2, 4, 8, 16])
    accs = [curve[n]["accuracy"] for n in (1, 2, 4, 8, 16)]
    assert accs == sorted(accs) and accs[-1] > accs[0]
    assert curve[16]["accuracy"] == sum(any(cs) for cs in correct) / len(correct)  # coverage


def test_bon_pipeline_with_the_verifier(tmp_path):
    data = tmp_path / "p.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{i}", "question": f"Compute {i} + 1.", "answer": str(i + 1)}) + "\n"
                            for i in range(3)))

    def rule(prompt, j):  # problem i: sample j is right when j % (i + 2) == 0
        i = int(prompt.split("Compute ")[1].split(" ")[0])
        return f"The answer is {i + 1 if j % (i + 2) == 0 else i}."

    cfg = load_config(BoNConfig, None, [f"data={data}", f"output_dir={tmp_path / 'out'}", "n_max=4",
                                        "ns=[1,2,4]", "rft_min_score=1.0", "progress=false"])
    summary = run_best_of_n(cfg, engine=RuleEngine(rule))
    assert summary["curve"]["4"]["accuracy"] == 1.0
    assert summary["curve"]["1"]["accuracy"] == pytest.approx(summary["sample_accuracy"])
    out = tmp_path / "out"
    assert (out / "curve.png").stat().st_size > 0 and "| 4 | 1.000 |" in (out / "curve.md").read_text()
    rft = [json.loads(x) for x in (out / "rft_sft.jsonl").read_text().splitlines()]
    assert len(rft) == 3 and all(r["completion"][0]["content"] == f"The answer is {int(r['id'][1:]) + 1}." for r in rft)


def test_bon_with_the_ifeval_verifier_on_ifeval_rows(tmp_path):
    """scorer.verifier=ifeval: the score is the fraction of instructions followed (0 for a cut sample); right =
    finished and every instruction followed, so the oracle curve's N=4 point is the rows' coverage."""
    from alignkit.generate.engine import Completion, GenerationResult

    rows = [{"key": 10 + i, "prompt": f"Describe cats {i}. No commas. Include the word purr.",
             "instruction_id_list": ["punctuation:no_comma", "keywords:existence"],
             "kwargs": [{}, {"keywords": ["purr"]}]} for i in range(2)]
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    texts = {0: [("Cats, purr.", "stop"), ("Cats purr.", "length"), ("Cats purr.", "stop"), ("Cats.", "stop")],
             1: [("Cats, sleep.", "stop"), ("Cats, purr.", "stop"), ("Cats nap.", "stop"), ("Cats, nap.", "stop")]}

    class Scripted:
        def generate(self, prompts, params, *, apply_chat_template=True, progress=False):
            return [GenerationResult(p, 3, [Completion(t, [1], f) for t, f in texts[int(p.split()[2][:-1])]])
                    for p in prompts]

    cfg = load_config(BoNConfig, None, [f"data={data}", f"output_dir={tmp_path / 'out'}", "n_max=4", "ns=[1,2,4]",
                                        "scorer.verifier=ifeval", "progress=false"])
    summary = run_best_of_n(cfg, engine=Scripted())
    saved = [json.loads(x) for x in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
    assert [s["scores"] for s in saved] == [[0.5, 0.0, 1.0, 0.5], [0.0, 0.5, 0.5, 0.0]]
    assert [s["correct"] for s in saved] == [[False, False, True, False], [False, False, False, False]]
    assert summary["curve"]["4"]["accuracy"] == 0.5 and summary["scorer"] == "verifier (ifeval)"
    # block [0.5, 0.0] of row 0 picks sample 0 (wrong); block [1.0, 0.5] picks sample 2 (right)
    assert summary["curve"]["2"]["accuracy"] == pytest.approx(1 / 4)
    rft = [json.loads(x) for x in (tmp_path / "out" / "rft_sft.jsonl").read_text().splitlines()]
    assert [r["completion"][0]["content"] for r in rft] == ["Cats purr.", "Cats, purr."] and rft[0]["id"] == 10


def test_bon_with_the_math_critique_judge_over_http(tmp_path):
    """The critic (a faulty HTTP judge) selects: 9 for a right final answer, 2 for a wrong one, and a
    critique without a score (NOSCORE answers) is a failed score that is never picked, not a 0."""
    from judge_fakes import FaultServer, critique_answer

    data = tmp_path / "p.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{i}", "question": f"Compute {i} + 1.", "answer": str(i + 1)}) + "\n"
                            for i in range(3)))

    def rule(prompt, j):  # sample 3 is right; samples 0 and 2 are unscorable; sample 1 is wrong
        i = int(prompt.split("Compute ")[1].split(" ")[0])
        return {0: "NOSCORE", 1: f"The answer is {i}.", 2: "NOSCORE", 3: f"The answer is {i + 1}."}[j]

    with FaultServer(timeout_sleep=0.5, answer=critique_answer) as server:
        judge = [f"scorer.judge.spec=openai:{server.url}#fake", "scorer.judge.timeout=0.3",
                 "scorer.judge.backoff_base=0.01", "scorer.judge.backoff_max=0.05", "scorer.judge.max_retries=6"]
        cfg = load_config(BoNConfig, None, [f"data={data}", f"output_dir={tmp_path / 'out'}", "n_max=4",
                                            "ns=[1,2,4]", "progress=false", "scorer.type=judge", *judge])
        summary = run_best_of_n(cfg, engine=RuleEngine(rule))
    curve = summary["curve"]
    assert curve["4"]["accuracy"] == 1.0  # the critic prefers the right answer (9) over the wrong one (2)
    # N=1: blocks [0] and [2] have no scorable sample -> failed selections; [1] wrong, [3] right
    assert curve["1"]["selection_failures"] == 6 and curve["1"]["accuracy"] == pytest.approx(3 / 12)
    # N=2: block [0,1] picks the wrong 1 (the NOSCORE one is never chosen), block [2,3] the right 3
    assert curve["2"]["selection_failures"] == 0 and curve["2"]["accuracy"] == pytest.approx(0.5)
    assert "judge (openai:" in summary["scorer"]


def test_bon_config_refusals():
    from alignkit.config import ConfigError
    from alignkit.pipelines.best_of_n import _check

    with pytest.raises(ConfigError, match="divide"):
        _check(load_config(BoNConfig, None, ["data=x", "n_max=8", "ns=[3]"]))
    with pytest.raises(ConfigError, match="scorer.model"):
        _check(load_config(BoNConfig, None, ["data=x", "scorer.type=rm"]))
    with pytest.raises(ConfigError, match="unknown option 'most'"):
        _check(load_config(BoNConfig, None, ["data=x", "scorer.verifier=ifeval:most"]))
    with pytest.raises(ConfigError, match="use verifier or rm"):
        _check(load_config(BoNConfig, None, ["data=x", "scorer.verifier=ifeval", "scorer.type=judge"]))
