"""One model-loading path for every recipe: the RM recipe gets what the policy recipes get."""

import pytest


@pytest.mark.parametrize("head", ["causal-lm", "reward"])
def test_gradient_checkpointing_turns_the_kv_cache_off_for_every_head(tiny_model_dir, head):
    from alignkit.config import load_config
    from alignkit.train.run import ModelConfig, load_policy

    cfg = load_config(ModelConfig, None, [f"name_or_path={tiny_model_dir}", "gradient_checkpointing=true",
                                          "lora.r=4"])
    model, tok = load_policy(cfg, seed=0, head=head)
    base = model.get_base_model()
    assert base.is_gradient_checkpointing and base.config.use_cache is False
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "score" in n for n in trainable)
    assert type(base).__name__.endswith("SequenceClassification" if head == "reward" else "CausalLM")
