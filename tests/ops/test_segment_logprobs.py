"""Packed / shared-prompt layouts (collate_segments) give the log-probs and gradients of separate sequences.

Tiny random Llama, fp32, mixed prompt and completion lengths. Log-probs agree within 1e-5 absolute;
each gradient tensor within 1e-5 x max(1, its largest entry) (the layouts sum the same contributions
in another order: the tied embedding's gradient, largest entry ~8, differs by up to ~3e-5).
"""

from __future__ import annotations

import pytest
import torch

from alignkit.data.batching import collate, collate_segments
from alignkit.data.tokenize import TokenizedExample
from alignkit.ops import response_logps

# (prompt length, completion lengths) per example: mixed lengths, so separate rows are padded.
SHAPES = [(5, [3, 7, 2, 4]), (9, [6, 1, 5, 5]), (2, [4, 4, 8, 3]), (14, [2, 9, 1, 6])]


def examples(k: int, vocab: int, seed: int = 0) -> list[TokenizedExample]:
    g = torch.Generator().manual_seed(seed)

    def ids(n):
        return torch.randint(3, vocab, (n,), generator=g).tolist()

    return [TokenizedExample(i, ids(p), [ids(n) for n in comps[:k]]) for i, (p, comps) in enumerate(SHAPES)]


def seg_logps(model, batch):
    return response_logps(model, batch["input_ids"], batch["attention_mask"], batch["loss_mask"],
                          position_ids=batch["position_ids"], predictor=batch["predictor"],
                          sequence=batch["sequence"], n_sequences=batch["valid"].numel(), chunk_size=7)


def grads_of(model, fn, weights):
    model.zero_grad(set_to_none=True)
    out = fn()
    (out.logps * weights).sum().backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.fixture(params=["sdpa", "eager"])
def lm(tiny_lm, request):
    model, tok = tiny_lm
    model.config._attn_implementation = request.param
    return model.eval().requires_grad_(True), tok


@pytest.mark.parametrize("k", [2, 4])
@pytest.mark.parametrize("shared_prompt,pack", [(True, True), (True, False), (False, True)])
def test_segment_layouts_equal_separate_sequences(lm, k, shared_prompt, pack):
    model, tok = lm
    exs = examples(k, len(tok))
    sep = collate(exs, tok.pad_token_id)
    seg = collate_segments(exs, tok.pad_token_id, shared_prompt=shared_prompt, pack=pack)
    if pack and not shared_prompt:  # packing really put several sequences in one row
        assert seg["input_ids"].shape[0] < len(exs) * k
    weights = torch.linspace(-1.0, 2.0, len(exs) * k)
    ref, ref_grads = grads_of(model, lambda: response_logps(model, sep["input_ids"], sep["attention_mask"],
                                                            sep["loss_mask"]), weights)
    out, out_grads = grads_of(model, lambda: seg_logps(model, seg), weights)
    torch.testing.assert_close(out.logps, ref.logps, rtol=0, atol=1e-5)
    assert torch.equal(out.counts, ref.counts)
    for name, g in ref_grads.items():
        torch.testing.assert_close(out_grads[name], g, rtol=0, atol=1e-5 * max(1.0, g.abs().max().item()), msg=name)
    assert all(g.abs().sum() > 0 for g in out_grads.values())


def test_shared_prompt_computes_the_prompt_once(tokenizer):
    exs = examples(4, 1000)
    seg = collate_segments(exs, tokenizer.pad_token_id, shared_prompt=True, pack=False)
    assert seg["input_ids"].shape == (4, max(len(e.prompt_ids) + sum(map(len, e.completion_ids)) for e in exs))
    m, p, c0 = seg["attention_mask"][0, 0], len(exs[0].prompt_ids), len(exs[0].completion_ids[0])
    assert m[p + c0, p - 1] and not m[p + c0, p]  # completion 1 sees the prompt, never completion 0
    assert seg["position_ids"][0, p + c0].item() == p  # and its positions continue from the prompt's end
    assert seg["predictor"][0, p + c0].item() == p - 1  # its first token is predicted by the prompt's last


def test_missing_candidates_get_empty_slots(lm):
    model, tok = lm
    exs = examples(4, len(tok))
    exs[1].completion_ids = exs[1].completion_ids[:2]  # K = 2 here, 4 elsewhere
    for batch in (collate(exs, tok.pad_token_id), collate_segments(exs, tok.pad_token_id)):
        assert batch["valid"].sum() == 14 and not batch["valid"][1, 2:].any()
    seg = collate_segments(exs, tok.pad_token_id)
    with torch.no_grad():
        out = seg_logps(model, seg)
    slots = [2 * 4 + 1, 3 * 4 + 1]  # completion 2 and 3 of example 1
    assert out.logps[slots].tolist() == [0.0, 0.0] and out.counts[slots].tolist() == [0, 0]


def test_segment_layout_refuses_inconsistent_inputs(lm):
    model, tok = lm
    seg = collate_segments(examples(2, len(tok)), tok.pad_token_id)
    with pytest.raises(ValueError, match=r"\(R, 1, T, T\) bool"):
        response_logps(model, seg["input_ids"], seg["attention_mask"].float(), seg["loss_mask"],
                       position_ids=seg["position_ids"], predictor=seg["predictor"], sequence=seg["sequence"],
                       n_sequences=8)
    with pytest.raises(ValueError, match="n_sequences"):
        response_logps(model, seg["input_ids"], seg["attention_mask"], seg["loss_mask"],
                       position_ids=seg["position_ids"], predictor=seg["predictor"], sequence=seg["sequence"],
                       n_sequences=3)
