import torch

from alignkit.models import DEFAULT_MODEL, EMBEDDED, ModelError, resolve_model_path, tiny_random_causal_lm


def test_embedded_materialised_as_plain_hf_checkpoint(embedded_path):
    from pathlib import Path

    p = Path(embedded_path)
    assert (p / "model.safetensors").is_file() and (p / "config.json").is_file()
    assert (p / "tokenizer.json").is_file()
    assert "quantization_config" not in (p / "config.json").read_text()
    assert resolve_model_path(DEFAULT_MODEL) == embedded_path  # second call reuses the cache


def test_tiny_random_lm_shares_tokenizer(tokenizer):
    model, tok = tiny_random_causal_lm(tokenizer)
    ids = tok("hello there", return_tensors="pt").input_ids
    out = model(ids).logits
    assert out.shape[-1] == len(tok) and torch.isfinite(out).all()


def test_not_a_model_dir(tmp_path):
    import pytest

    with pytest.raises(ModelError, match="not a Hugging Face model directory"):
        resolve_model_path(str(tmp_path))


def test_registry_names():
    assert set(EMBEDDED) == {"smollm2-135m-instruct", "all-minilm-l6-v2"}


def test_tiny_tokenizer_is_deterministic_lossless_and_chatml(tokenizer):
    from alignkit.data.tokenize import template_parity_report
    from alignkit.models import tiny_tokenizer

    again = tiny_tokenizer()
    assert again.get_vocab() == tokenizer.get_vocab() and len(tokenizer) < 1000
    text = "héllo 世界 <b>\n\tdone"
    assert tokenizer.decode(tokenizer(text).input_ids) == text  # byte-level: any text round-trips
    assert (tokenizer.eos_token, tokenizer.pad_token, tokenizer.bos_token) == ("<|im_end|>",) * 2 + ("<|im_start|>",)
    user = [{"role": "user", "content": "hi"}]
    rendered = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    assert rendered.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    assert template_parity_report(tokenizer, [user]) == []  # training render == inference render
