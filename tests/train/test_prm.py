"""Process reward model: step layout, per-step scores against a manual forward, one-step training, scorer."""

from __future__ import annotations

import json

import pytest
import torch
from tests.train.conftest import write_jsonl


def test_per_step_scores_equal_a_manual_forward(tiny_model_dir):
    from alignkit.models import load_reward_model, load_tokenizer
    from alignkit.train.prm import PRMForward, StepExample, collate_steps, encode_steps, step_probabilities

    tok = load_tokenizer(tiny_model_dir)
    model = load_reward_model(tiny_model_dir)
    sols = [("Compute 7 + 5.", ["7 + 5 = 12", "The answer is 12."]),
            ("Convert 3 km to m.", ["3 km = 3 × 1000 m = 3000 m", "So it is 3000 m", "The answer is 3000 m."])]
    sep_id = tok("\n", add_special_tokens=False)["input_ids"][-1]
    examples = []
    for i, (prompt, steps) in enumerate(sols):
        ids, pos = encode_steps(tok, prompt, steps, "\n", chat_template=True)
        assert len(pos) == len(steps) and all(ids[p] == sep_id for p in pos) and pos[-1] == len(ids) - 1
        examples.append(StepExample(i, ids, pos, [1.0] * len(pos)))
    batch = collate_steps(examples, pad_id=tok.pad_token_id or 0)
    with torch.no_grad():
        batched = PRMForward(model)(batch["input_ids"], batch["attention_mask"], batch["step_positions"])
        for i, ex in enumerate(examples):  # manual: one unpadded sequence, head applied at each step end
            hidden = model.model(input_ids=torch.tensor([ex.input_ids])).last_hidden_state[0]
            manual = model.score(hidden[ex.step_positions]).squeeze(-1)
            assert torch.allclose(batched[i, : len(ex.step_positions)], manual, atol=1e-5)
    probs = step_probabilities(PRMForward(model), examples, tok.pad_token_id or 0, batch_size=1, device="cpu")
    assert probs[1] == pytest.approx(batched[1].sigmoid().tolist(), abs=1e-5)


def test_one_step_prm_and_scorer(tmp_path, tiny_model_dir):
    from alignkit.config import load_config
    from alignkit.data.mathgen import generate_problems, stepwise_rows
    from alignkit.train.prm import PRMConfig, train_prm
    from alignkit.train.scorers import ProcessRewardScorer

    rows = stepwise_rows(generate_problems(8, seed=0, steps=2, max_operand=10), seed=0)
    data = write_jsonl(tmp_path / "s.jsonl", rows)
    cfg = load_config(PRMConfig, None, [f"model.name_or_path={tiny_model_dir}", f"data.train={data}",
                                        f"data.eval={data}", f"train.output_dir={tmp_path / 'out'}",
                                        "train.progress=false", "train.report_to=[]", "train.max_steps=1",
                                        "train.lr=1e-3", "aggregation=prod"])
    summary = train_prm(cfg)
    assert summary["steps"] == 1 and summary["data"]["kept"] == 8
    assert set(summary["eval_after"]) >= {"step_accuracy", "solution_accuracy"}
    settings = json.loads((tmp_path / "out" / "prm.json").read_text())
    assert settings == {"step_separator": "\n", "chat_template": True, "aggregation": "prod"}
    scorer = ProcessRewardScorer(str(tmp_path / "out"))
    text = "\n".join(rows[0]["completions"])
    probs = scorer.step_probs([rows[0]["prompt"]], [rows[0]["completions"]])[0]
    assert len(probs) == len(rows[0]["completions"])
    assert scorer.score([rows[0]["prompt"], "q"], [text, "  \n "]) == [pytest.approx(float(torch.tensor(probs).prod())),
                                                                       None]


def test_long_rows_keep_whole_steps(tokenizer):
    from alignkit.config import load_config
    from alignkit.data.rows import Example
    from alignkit.train.prm import PRMConfig, encode_steps, tokenize_stepwise

    ex = Example(0, "q", ["one two three", "four five six", "seven"], labels=[1.0, 0.0, 0.0])
    ids, pos = encode_steps(tokenizer, "q", ex.completions, "\n", chat_template=False)
    limit = pos[1] + 1  # room for the first two steps only
    cfg = load_config(PRMConfig, None, ["data.train=x", "chat_template=false", f"data.policy.max_length={limit}"])
    out, summary = tokenize_stepwise([ex], tokenizer, cfg)
    assert summary["truncated_steps"] == 1 and out[0].labels == [1.0, 0.0]
    assert out[0].step_positions == pos[:2] and out[0].input_ids == ids[:limit]
    cfg = load_config(PRMConfig, None, ["data.train=x", "chat_template=false", f"data.policy.max_length={limit}",
                                        "data.policy.on_long_completion=drop"])
    assert tokenize_stepwise([ex], tokenizer, cfg)[1]["dropped_long_sequence"] == 1
