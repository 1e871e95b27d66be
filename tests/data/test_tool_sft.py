"""``alignkit sft`` on tool conversations: the loss is the NLL of the assistant turns' tokens, never the tool results'."""

from __future__ import annotations

import json

import pytest
import torch

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]


def _row(i: int) -> dict:
    call = {"id": f"c{i}", "type": "function", "function": {"name": "get_weather", "arguments": json.dumps({"city": f"c{i}"})}}
    return {"tools": TOOLS, "messages": [
        {"role": "user", "content": f"Weather in c{i}?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": f"c{i}", "content": f"result {i} " * (1 + i % 3)},
        {"role": "assistant", "content": f"It is fine in c{i}."},
    ]}


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory, tokenizer):
    from alignkit.models import tiny_random_causal_lm

    model, tok = tiny_random_causal_lm(tokenizer, seed=0)
    path = tmp_path_factory.mktemp("tiny-tool-model")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def _hand_nll(model_dir: str, rows: list[dict], train_on: str) -> float:
    """Token-mean NLL over the trained tokens, from one plain forward pass per row."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignkit.data.rows import parse_row
    from alignkit.data.tokenize import DataPolicy, tokenize_examples

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
    exs, _ = tokenize_examples([parse_row(r, "sft", "r", i) for i, r in enumerate(rows)], tok, DataPolicy(),
                               train_on=train_on)
    total, count = 0.0, 0
    for ex in exs:
        ids = torch.tensor([ex.prompt_ids + ex.completion_ids[0]])
        mask = torch.tensor([False] * len(ex.prompt_ids) + (ex.completion_masks[0] or [True] * len(ex.completion_ids[0])))
        with torch.no_grad():
            logps = model(ids).logits[0, :-1].log_softmax(-1).gather(-1, ids[0, 1:, None])[:, 0]
        total -= float(logps[mask[1:]].sum())
        count += int(mask.sum())
    return total / count


@pytest.mark.parametrize("train_on", ["all_assistant", "last_assistant"])
def test_sft_loss_is_the_nll_of_the_trained_turns(tmp_path, tiny_model_dir, train_on):
    from alignkit.config import load_config
    from alignkit.train.sft import SFTConfig, train_sft

    rows = [_row(i) for i in range(4)]
    data = tmp_path / "tools.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    want = _hand_nll(tiny_model_dir, rows, train_on)
    for pack in ("true", "false"):
        cfg = load_config(SFTConfig, None, [
            f"model.name_or_path={tiny_model_dir}", f"data.train={data}", f"data.train_on={train_on}",
            f"train.output_dir={tmp_path / pack}", "train.progress=false", "train.report_to=[]",
            "train.max_steps=1", "train.batch_size=4", "train.precision=fp32", f"pack={pack}"])
        summary = train_sft(cfg)
        assert abs(summary["final_loss"] - want) < 1e-5, (pack, summary["final_loss"], want)
