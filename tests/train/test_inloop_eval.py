"""``train.eval``: evaluation inside training (sft, dpo, rl) on a tiny random model.

The central invariant: an evaluation never changes the training trajectory. The model here has attention
dropout, so training draws from torch's global RNG, and the evaluations draw from it too (the HF engine
seeds unseeded requests from it): without the RNG isolation the weights differ, which ``test_in_loop_eval_isolation_is_what_keeps_it`` checks, so the equality test can fail.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from tests.train.conftest import make_pairs, make_sft, write_jsonl

from alignkit.data.verifiable import DEMO_HELDOUT

IFEVAL_ROWS = [
    {"key": 1, "prompt": "Name a colour. Do not use any commas.", "instruction_id_list": ["punctuation:no_comma"],
     "kwargs": [{}]},
    {"key": 2, "prompt": "Describe rain in lowercase, in fewer than 40 words.",
     "instruction_id_list": ["change_case:english_lowercase", "length_constraints:number_words"],
     "kwargs": [{}, {"relation": "less than", "num_words": 40}]},
    {"key": 3, "prompt": "Say hello and end with 'Bye.'", "instruction_id_list": ["startend:end_checker"],
     "kwargs": [{"end_phrase": "Bye."}]},
]


@pytest.fixture(scope="module")
def dropout_model_dir(tmp_path_factory, tokenizer):
    """The tiny random Llama with attention dropout: its training steps consume torch's global RNG."""
    from alignkit.models import tiny_random_causal_lm

    model, tok = tiny_random_causal_lm(tokenizer, hidden=32, layers=2, heads=4, seed=0)
    model.config.attention_dropout = 0.3
    with torch.no_grad():
        model.lm_head.weight.mul_(20.0)  # sharper logits: answers that differ between prompts
    d = tmp_path_factory.mktemp("tiny-dropout-model")
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return str(d)


def _ifeval_file(tmp_path) -> str:
    return write_jsonl(tmp_path / "ifeval.jsonl", IFEVAL_ROWS)


def _items(tmp_path) -> str:
    """An ifeval, a verifiable and a reward evaluation, as a CLI override value."""
    items = [{"kind": "ifeval", "data": _ifeval_file(tmp_path), "max_new_tokens": 8},
             {"kind": "verifiable", "data": str(DEMO_HELDOUT), "limit": 2, "max_new_tokens": 6},
             {"kind": "reward", "name": "fake_reward", "data": str(DEMO_HELDOUT), "limit": 3, "max_new_tokens": 6,
              "verifier": "tests.train.rl_fakes:varied"}]
    return json.dumps(items)


def _offline_cfg(kind, tmp_path, model_dir, out, **kw):
    from alignkit.config import load_config
    from alignkit.train.preference import PreferenceConfig
    from alignkit.train.sft import SFTConfig

    rows = make_sft(8) if kind == "sft" else make_pairs(8)
    data = write_jsonl(tmp_path / f"{kind}.jsonl", rows)
    over = {"model.name_or_path": model_dir, "data.train": data, "train.output_dir": str(tmp_path / out),
            "train.progress": "false", "train.report_to": "[]", "train.lr": "1e-3", "train.max_steps": 3,
            "train.batch_size": 2, "train.precision": "fp32", "train.seed": 3, **kw}
    cls = SFTConfig if kind == "sft" else PreferenceConfig
    return load_config(cls, None, [f"{k}={v}" for k, v in over.items()])


def _rl_cfg(tmp_path, model_dir, out, **kw):
    from alignkit.config import load_config
    from alignkit.train.rl import RLConfig

    over = {"model.name_or_path": model_dir, "data.train": str(DEMO_HELDOUT), "rollout.prompts_per_step": 2,
            "rollout.n": 2, "rollout.max_new_tokens": 5, "train.max_steps": 2, "train.lr": "1e-3",
            "train.adam_eps": "1e-3", "critic.lr": "1e-3", "reward.verifier": "tests.train.rl_fakes:varied",
            "ppo.micro_batch_size": 2, "train.output_dir": str(tmp_path / out), "train.precision": "fp32",
            "train.progress": "false", "train.report_to": "[]", "train.report": "false", **kw}
    return load_config(RLConfig, None, [f"{k}={v}" for k, v in over.items()])


def _run(recipe, tmp_path, model_dir, out, **kw) -> dict:
    if recipe == "rl":
        from alignkit.train.rl import train_rl

        return train_rl(_rl_cfg(tmp_path, model_dir, out, **kw))
    from alignkit.train.preference import train_preference
    from alignkit.train.sft import train_sft

    cfg = _offline_cfg(recipe, tmp_path, model_dir, out, **kw)
    return (train_sft if recipe == "sft" else train_preference)(cfg)


def _weights(path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(Path(path) / "model.safetensors")


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _lines(out) -> list[dict]:
    return [json.loads(x) for x in (Path(out) / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("recipe", ["sft", "dpo", "rl"])
def test_in_loop_eval_leaves_the_weights_unchanged_and_logs_every_eval(tmp_path, dropout_model_dir, recipe):
    plain = _run(recipe, tmp_path, dropout_model_dir, "plain")
    evaluated = _run(recipe, tmp_path, dropout_model_dir, "evaluated",
                     **{"train.eval": _items(tmp_path), "train.eval_every": 2})
    assert _same(_weights(plain["output_dir"]), _weights(evaluated["output_dir"]))
    lines = _lines(evaluated["output_dir"])
    total = 3 if recipe != "rl" else 2
    evaluated_steps = [x["step"] for x in lines if "eval/ifeval/prompt_level_strict_acc" in x]
    assert evaluated_steps == sorted({0, 2, total})  # before, every 2 steps, at the end
    last = lines[-1]
    assert all(x["time/eval_s"] >= 0 for x in lines if x["step"] in evaluated_steps)
    assert last["eval/ifeval/n"] == 3 and 0.0 <= last["eval/ifeval/inst_level_loose_acc"] <= 1.0
    assert last["eval/verifiable/n"] == 2 and 0.0 <= last["eval/verifiable/pass_rate"] <= 1.0
    assert last["eval/fake_reward/n"] == 3 and last["eval/fake_reward/failed"] == 0
    assert evaluated["train_eval"]["ifeval/prompt_level_strict_acc"]["step"] == total
    assert Path(evaluated["train_eval_plot"]).is_file()
    assert "train_eval" not in plain


@contextlib.contextmanager
def _without_rng_isolation(module):
    """``isolated`` with the RNG states left as the evaluation leaves them (modes still restored)."""
    modes = [(m, m.training) for m in module.modules()]
    with torch.no_grad():
        yield
    for m, training in modes:
        m.training = training


@pytest.mark.parametrize("recipe", ["sft", "dpo", "rl"])
def test_in_loop_eval_isolation_is_what_keeps_it(tmp_path, dropout_model_dir, recipe, monkeypatch):
    """The equality above is not vacuous: with the RNG isolation removed, the same evaluations change the weights.
    (The modes matter less here: every recipe's step puts the policy back in train mode itself;
    ``test_isolated_restores_rng_states_and_modes`` covers them.)"""
    from alignkit.train import inloop_eval

    plain = _run(recipe, tmp_path, dropout_model_dir, "plain")
    monkeypatch.setattr(inloop_eval, "isolated", _without_rng_isolation)
    leaky = _run(recipe, tmp_path, dropout_model_dir, "leaky",
                 **{"train.eval": _items(tmp_path), "train.eval_every": 1})
    assert not _same(_weights(plain["output_dir"]), _weights(leaky["output_dir"]))


def test_isolated_restores_rng_states_and_modes():
    import random

    import numpy as np

    from alignkit.train.inloop_eval import isolated

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5))
    model.train()
    model[0].eval()
    before = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    with isolated(model):
        model.eval()
        torch.rand(5), random.random(), np.random.rand(3)
        assert not torch.is_grad_enabled()
    after = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1])
    assert torch.equal(before[0], after[0]) and before[1] == after[1] and (before[2] == after[2]).all()
    assert [m.training for m in model.modules()] == [True, False, True]


def test_resume_keeps_the_evaluations_logged_before_the_kill_and_repeats_none(tmp_path, dropout_model_dir):
    """A run killed after step 3's line but with its last checkpoint at step 1 resumes from step 1: the log keeps
    the evaluations of steps 0 and 1 once, drops the torn tail, and ends equal to the uninterrupted run's."""
    from alignkit.train.checkpoint import checkpoint_dirs
    from alignkit.train.sft import train_sft

    kw = {"train.eval": _items(tmp_path), "train.eval_every": 1, "train.save_every": 1, "train.keep_checkpoints": 5}
    full = _run("sft", tmp_path, dropout_model_dir, "full", **kw)
    part = _run("sft", tmp_path, dropout_model_dir, "part", **kw)
    out = Path(part["output_dir"])
    for d in checkpoint_dirs(out)[1:]:  # the kill came before the step-2 checkpoint was complete
        shutil.rmtree(d)
    (out / "summary.json").unlink()
    with open(out / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 4, "eval/ifeval/n"')  # torn by the kill
    resumed = train_sft(_offline_cfg("sft", tmp_path, dropout_model_dir, "part", **kw), resume=True)
    lines, reference = _lines(out), _lines(full["output_dir"])
    assert [x["step"] for x in lines] == [0, 1, 2, 3]
    for a, b in zip(lines, reference, strict=True):
        a, b = ({k: v for k, v in x.items() if k != "elapsed_s" and not k.startswith("time/")} for x in (a, b))
        assert a.keys() == b.keys() and a == pytest.approx(b, abs=1e-6)
    assert _same(_weights(full["output_dir"]), _weights(resumed["output_dir"]))


def test_mini_suite_and_mathusereval_kinds_with_a_scripted_judge(tmp_path, dropout_model_dir):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "judge"))
    from judge_fakes import FaultServer, critique_answer

    from alignkit.evals.mini_suite import build_suite, write_suite

    (mini,) = write_suite(build_suite(["mini_kv_retrieval"], ["300"], 2, 0), tmp_path / "mini")
    questions = write_jsonl(tmp_path / "q.jsonl", [
        {"question_id": f"q{i}", "category": "Calculate", "question": f"What is {i} + {i}?",
         "reference": f"{i} + {i} = {2 * i}. The answer is {2 * i}.", "answer": str(2 * i)} for i in range(1, 4)])
    with FaultServer(faults=False, answer=critique_answer) as server:
        items = [{"kind": "mini_suite", "data": str(mini), "max_new_tokens": 4},
                 {"kind": "mathusereval", "name": "math", "data": questions, "max_new_tokens": 6,
                  "judge": {"spec": f"openai:{server.url}#critic"}}]
        summary = _run("sft", tmp_path, dropout_model_dir, "run", **{"train.eval": json.dumps(items)})
    last = _lines(summary["output_dir"])[-1]
    assert last["eval/mini_suite/n"] == 2 and 0.0 <= last["eval/mini_suite/score"] <= 100.0
    # the random model never answers right: the scripted judge gives every answer 2
    assert (last["eval/math/n"], last["eval/math/micro_mean"], last["eval/math/parse_failures"]) == (3, 2.0, 0)
    assert [x["step"] for x in _lines(summary["output_dir"])] == [0, 1, 2, 3]


def test_rl_report_plots_the_evaluations(tmp_path, dropout_model_dir):
    summary = _run("rl", tmp_path, dropout_model_dir, "run", **{
        "train.eval": json.dumps([{"kind": "ifeval", "data": _ifeval_file(tmp_path), "max_new_tokens": 4}]),
        "train.report": "true"})
    report = (Path(summary["output_dir"]) / "report.md").read_text()
    assert "![evaluations](eval_curves.png)" in report and "| ifeval/prompt_level_strict_acc | 2 |" in report
    assert (Path(summary["output_dir"]) / "eval_curves.png").is_file()


@pytest.mark.parametrize("items, message", [
    ([{"kind": "ifeval", "data": "a"}, {"kind": "ifeval", "data": "b"}], "two evaluations are named 'ifeval'"),
    ([{"kind": "reward", "data": "a"}], "exactly one of model"),
    ([{"kind": "ifeval", "data": "a", "max_tokens": 3}], "max_tokens"),
    ([{"kind": "bleu", "data": "a"}], "bleu"),
])
def test_bad_items_are_refused(tmp_path, items, message):
    from alignkit.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        _offline_cfg("sft", tmp_path, "m", "o", **{"train.eval": json.dumps(items)})


def test_rl_eval_every_is_the_cadence_of_train_eval(tmp_path, dropout_model_dir):
    from alignkit.errors import ConfigError

    with pytest.raises(ConfigError, match="train.eval_every sets how often alignkit rl runs train.eval"):
        _rl_cfg(tmp_path, dropout_model_dir, "o", **{"train.eval_every": 2})
    cfg = _rl_cfg(tmp_path, dropout_model_dir, "o", **{"train.eval_every": 2, "train.eval": _items(tmp_path)})
    assert cfg.train.eval_every == 2 and [i.label for i in cfg.train.eval] == ["ifeval", "verifiable", "fake_reward"]


def test_a_bad_eval_file_is_refused_before_anything_is_written(tmp_path, dropout_model_dir):
    from alignkit.errors import DataError

    bad = write_jsonl(tmp_path / "bad.jsonl", [{"key": 1, "prompt": "x", "instruction_id_list": ["no:such"],
                                                "kwargs": [{}]}])
    with pytest.raises(DataError, match="bad.jsonl:1"):
        _run("sft", tmp_path, dropout_model_dir, "out", **{"train.eval": json.dumps([{"kind": "ifeval", "data": bad}])})
    assert not (tmp_path / "out").exists()


def test_rm_refuses_train_eval(tmp_path, dropout_model_dir):
    """alignkit rm trains no policy that could answer: train.eval is refused, not skipped."""
    from alignkit.config import load_config
    from alignkit.errors import ConfigError
    from alignkit.train.reward import RMConfig, train_rm

    data = write_jsonl(tmp_path / "p.jsonl", make_pairs(4))
    items = json.dumps([{"kind": "ifeval", "data": _ifeval_file(tmp_path)}])
    cfg = load_config(RMConfig, None, [f"model.name_or_path={dropout_model_dir}", f"data.train={data}",
                                       f"train.output_dir={tmp_path / 'rm'}", "train.progress=false",
                                       "train.report_to=[]", "train.max_steps=1", f"train.eval={items}"])
    with pytest.raises(ConfigError, match="supported by alignkit sft, dpo and rl"):
        train_rm(cfg)
