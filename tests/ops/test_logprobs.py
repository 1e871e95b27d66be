"""response_logps against a naive full-logits reference on a tiny random Llama (fp32, atol 1e-5)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from alignkit.ops import ResponseLogps, UnsupportedModelError, response_logps

# (prompt length, total length) per row; row 1 is the longest, the others are right-padded.
ROWS = [(3, 9), (5, 14), (2, 6)]


def make_batch(vocab: int, pad_id: int, rows=ROWS, seed: int = 0):
    """Right-padded (input_ids, attention_mask, loss_mask) with random token ids."""
    gen = torch.Generator().manual_seed(seed)
    width = max(total for _, total in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(rows), width), dtype=torch.long)
    loss_mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, (prompt, total) in enumerate(rows):
        ids[i, :total] = torch.randint(0, vocab, (total,), generator=gen)
        attn[i, :total] = 1
        loss_mask[i, prompt:total] = True
    return ids, attn, loss_mask


def naive_logps(model, ids, attn, loss_mask, temperature=1.0):
    """The textbook version: full B x T x V logits, shift, log-softmax, gather, mask, sum."""
    logits = model(input_ids=ids, attention_mask=attn).logits.float() / temperature
    per_token = logits[:, :-1].log_softmax(-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    return (per_token * loss_mask[:, 1:]).sum(-1)


@pytest.fixture()
def lm(tiny_lm):
    model, tok = tiny_lm
    return model.eval(), tok


def test_equals_naive_reference_and_counts(lm):
    model, tok = lm
    ids, attn, mask = make_batch(len(tok), tok.pad_token_id)
    with torch.no_grad():
        out = response_logps(model, ids, attn, mask, chunk_size=4)
        expected = naive_logps(model, ids, attn, mask)
    assert isinstance(out, ResponseLogps)
    assert out.logps.dtype == torch.float32 and out.logps.shape == (3,)
    torch.testing.assert_close(out.logps, expected, rtol=0, atol=1e-5)
    assert out.counts.dtype == torch.long and out.counts.tolist() == [6, 9, 4]


def test_gradients_equal_naive_ones(lm):
    model, tok = lm
    model.requires_grad_(True)
    ids, attn, mask = make_batch(len(tok), tok.pad_token_id)
    weights = torch.tensor([0.5, -1.0, 2.0])

    (response_logps(model, ids, attn, mask, chunk_size=5).logps * weights).sum().backward()
    ours = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    (naive_logps(model, ids, attn, mask) * weights).sum().backward()
    for name, param in model.named_parameters():
        torch.testing.assert_close(ours[name], param.grad, rtol=1e-4, atol=1e-6, msg=name)
    assert all(g.abs().sum() > 0 for g in ours.values())


def test_chunk_size_independence(lm):
    model, tok = lm
    ids, attn, mask = make_batch(len(tok), tok.pad_token_id)
    with torch.no_grad():
        results = [response_logps(model, ids, attn, mask, chunk_size=c).logps for c in (1, 3, 7, 1024)]
    # Sums of ~100 nats: one fp32 ulp there is 7.6e-6, and the chunk size changes the summation order,
    # so allow 1e-6 relative (a couple of ulps) on top of the absolute 1e-5.
    for other in results[1:]:
        torch.testing.assert_close(other, results[0], rtol=1e-6, atol=1e-5)


def test_padding_invariance(lm):
    model, tok = lm
    ids, attn, mask = make_batch(len(tok), tok.pad_token_id)
    with torch.no_grad():
        batched = response_logps(model, ids, attn, mask).logps
        for i, (_, total) in enumerate(ROWS):
            alone = response_logps(
                model, ids[i : i + 1, :total], attn[i : i + 1, :total], mask[i : i + 1, :total]
            )
            torch.testing.assert_close(alone.logps, batched[i : i + 1], rtol=0, atol=1e-5)


def test_temperature_divides_logits(lm):
    model, tok = lm
    ids, attn, mask = make_batch(len(tok), tok.pad_token_id)
    with torch.no_grad():
        hot = response_logps(model, ids, attn, mask, temperature=0.8).logps
        torch.testing.assert_close(
            hot, naive_logps(model, ids, attn, mask, temperature=0.8), rtol=0, atol=1e-5
        )
        assert (hot - response_logps(model, ids, attn, mask).logps).abs().min() > 1e-3


def test_lora_wrapped_model(lm):
    from alignkit.models import apply_lora

    model, tok = lm
    peft_model = apply_lora(model, r=4, alpha=8)
    torch.manual_seed(3)
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:  # PEFT initialises B = 0 (a no-op adapter); make the adapter matter
            param.data.normal_(std=0.5)
    ids, attn, mask = make_batch(len(tok), tok.pad_token_id)

    out = response_logps(peft_model, ids, attn, mask, chunk_size=4)
    with torch.no_grad():
        base = naive_logps(peft_model.get_base_model(), ids, attn, mask)  # adapters still active
        with peft_model.disable_adapter():
            no_adapter = naive_logps(peft_model, ids, attn, mask)
    torch.testing.assert_close(out.logps.detach(), base, rtol=0, atol=1e-5)
    assert (out.logps.detach() - no_adapter).abs().max() > 1e-3  # the adapter is in the computation

    out.logps.sum().backward()
    ours = {n: p.grad.clone() for n, p in peft_model.named_parameters() if p.requires_grad}
    peft_model.zero_grad()
    naive_logps(peft_model, ids, attn, mask).sum().backward()
    assert ours and all("lora_" in n for n in ours)
    for name, param in peft_model.named_parameters():
        if param.requires_grad:
            torch.testing.assert_close(ours[name], param.grad, rtol=1e-4, atol=1e-6, msg=name)
            assert ours[name].abs().sum() > 0, name


def test_no_vocab_sized_tensor_saved_for_backward(lm):
    # With grad on, autograd must keep only (chunk, H) inputs: (chunk, V) logits are recomputed.
    model, tok = lm
    model.requires_grad_(True)
    ids, attn, mask = make_batch(len(tok), tok.pad_token_id)
    vocab = model.config.vocab_size
    param_storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: list[tuple[int, ...]] = []

    def pack(tensor):
        if (
            tensor.untyped_storage().data_ptr() not in param_storages
        ):  # weights (and their views) cost nothing
            saved.append(tuple(tensor.shape))
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = response_logps(model, ids, attn, mask, chunk_size=4)
    assert saved  # the hook saw the backbone's saved activations
    assert [s for s in saved if vocab in s] == []
    out.logps.sum().backward()
    assert model.lm_head.weight.grad is not None and model.lm_head.weight.grad.abs().sum() > 0


def test_bf16_autocast_keeps_float32_log_softmax(lm):
    model, tok = lm
    ids, attn, mask = make_batch(len(tok), tok.pad_token_id)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = response_logps(model, ids, attn, mask, chunk_size=4)
        expected = naive_logps(model, ids, attn, mask)  # same bf16 matmuls, float32 log-softmax
    assert out.logps.dtype == torch.float32
    torch.testing.assert_close(out.logps, expected, rtol=0, atol=1e-3)


def _tiny_config(cls, **extra):
    return cls(
        vocab_size=128,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=8,
        **extra,
    )


def test_refuses_softcapped_and_scaled_logits():
    from transformers import CohereConfig, CohereForCausalLM, Gemma2Config, Gemma2ForCausalLM

    ids, attn, mask = make_batch(128, 0)
    gemma = Gemma2ForCausalLM(_tiny_config(Gemma2Config, final_logit_softcapping=30.0))
    with pytest.raises(UnsupportedModelError, match="final_logit_softcapping=30.0"):
        response_logps(gemma, ids, attn, mask)
    cohere = CohereForCausalLM(_tiny_config(CohereConfig))
    with pytest.raises(UnsupportedModelError, match="logit_scale=0.0625"):
        response_logps(cohere, ids, attn, mask)


def test_refuses_logit_postprocessing_no_config_field_announces():
    from transformers import LlamaConfig, LlamaForCausalLM

    class DoubledLogits(LlamaForCausalLM):
        def forward(self, *args, logits_to_keep=0, **kwargs):
            out = super().forward(*args, logits_to_keep=logits_to_keep, **kwargs)
            out.logits = out.logits * 2.0
            return out

    torch.manual_seed(0)
    model = DoubledLogits(_tiny_config(LlamaConfig)).eval()
    ids, attn, mask = make_batch(128, 0)
    with pytest.raises(UnsupportedModelError, match="differs from the model's logits"):
        response_logps(model, ids, attn, mask)
    plain = LlamaForCausalLM(model.config).eval()
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(
            response_logps(plain, ids, attn, mask).logps,
            naive_logps(plain, ids, attn, mask),
            rtol=0,
            atol=1e-5,
        )


def test_refuses_bad_masks_and_options(lm):
    model, tok = lm
    ids, attn, mask = make_batch(len(tok), tok.pad_token_id)
    first = mask.clone()
    first[0, 0] = True
    with pytest.raises(ValueError, match=r"loss_mask\[:, 0\]"):
        response_logps(model, ids, attn, first)
    padded = mask.clone()
    padded[2, -1] = True  # row 2 is padding there
    with pytest.raises(ValueError, match="padding"):
        response_logps(model, ids, attn, padded)
    empty = mask.clone()
    empty[1] = False
    with pytest.raises(ValueError, match=r"rows \[1\] have no response tokens"):
        response_logps(model, ids, attn, empty)
    with pytest.raises(ValueError, match="temperature"):
        response_logps(model, ids, attn, mask, temperature=0.0)
    with pytest.raises(ValueError, match="chunk_size"):
        response_logps(model, ids, attn, mask, chunk_size=0)
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        response_logps(model, ids, attn[:, :-1], mask)
    with pytest.raises(UnsupportedModelError, match="not a Hugging Face causal LM"):
        response_logps(torch.nn.Linear(2, 2), ids, attn, mask)


def test_ddp_two_processes_sync_gradients(tmp_path):
    """Under DDP (gloo, 2 CPU processes, half the batch each) the gradients equal one process's.

    Guards the design choice of calling the wrapped model's own forward: reaching into the backbone
    would skip DDP's forward and leave each rank with its own unsynchronised gradients.
    """
    worker = Path(__file__).with_name("ddp_logprobs_worker.py")
    with socket.socket() as sock:  # a free loopback port, so concurrent runs do not collide
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **os.environ,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "WORLD_SIZE": "2",
    }
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), env.get("PYTHONPATH", "")])
    procs = [
        subprocess.Popen(
            [sys.executable, str(worker), str(tmp_path / f"rank{r}.pt")], env={**env, "RANK": str(r)}
        )
        for r in range(2)
    ]
    for proc in procs:
        assert proc.wait(timeout=240) == 0

    sys.path.insert(0, str(worker.parent))
    try:
        from ddp_logprobs_worker import build, full_batch_grads
    finally:
        sys.path.remove(str(worker.parent))
    expected = full_batch_grads(*build())
    for rank in range(2):
        grads = torch.load(tmp_path / f"rank{rank}.pt")
        assert grads.keys() == expected.keys()
        for name in expected:
            torch.testing.assert_close(
                grads[name], expected[name], rtol=1e-4, atol=1e-7, msg=f"rank {rank} {name}"
            )


@pytest.mark.slow
def test_embedded_model_matches_naive_reference(embedded_path, tokenizer):
    """The real 135M model (tied embeddings, real logit magnitudes): equal to the naive computation."""
    from alignkit.models import load_causal_lm

    model = load_causal_lm(embedded_path)
    rows = []
    for question, answer in [("What is 2 + 3?", "5."), ("Name a colour.", "Blue is a colour.")]:
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
        )
        full = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}, {"role": "assistant", "content": answer}], tokenize=False
        )
        rows.append((len(tokenizer(prompt).input_ids), tokenizer(full).input_ids))
    width = max(len(ids) for _, ids in rows)
    ids = torch.full((2, width), tokenizer.pad_token_id)
    attn = torch.zeros((2, width), dtype=torch.long)
    mask = torch.zeros((2, width), dtype=torch.bool)
    for i, (prompt_len, full_ids) in enumerate(rows):
        ids[i, : len(full_ids)] = torch.tensor(full_ids)
        attn[i, : len(full_ids)] = 1
        mask[i, prompt_len : len(full_ids)] = True
    with torch.no_grad():
        out = response_logps(model, ids, attn, mask, chunk_size=8)
        torch.testing.assert_close(out.logps, naive_logps(model, ids, attn, mask), rtol=0, atol=1e-4)
    assert (out.logps < 0).all()
