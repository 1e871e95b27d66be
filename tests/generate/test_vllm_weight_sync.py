"""VLLMEngine.load_weights against a fake ``vllm`` package (tests/generate/fake_vllm.py) on CPU: what the
worker receives, the prefix-cache reset, and the refusals. No real vLLM runs here."""

from __future__ import annotations

import pytest
import torch

from alignkit.generate.engine import GenerationError, make_engine


@pytest.fixture()
def sync_engine(monkeypatch, tiny_model_dir):
    from tests.generate.fake_vllm import install

    install(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    return make_engine(tiny_model_dir, backend="vllm", batch_size=4, weight_sync=True, gpu_memory_utilization=0.25)


def _perturbed(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    return model


def test_load_weights_sends_every_parameter_then_resets_prefix_cache(sync_engine, tiny_model_dir):
    from alignkit.generate.engine import VLLMEngine

    llm = sync_engine.llm
    assert isinstance(sync_engine, VLLMEngine)
    assert llm.kwargs["worker_extension_cls"] == "alignkit.generate.vllm_worker.WeightSyncExtension"
    assert llm.kwargs["gpu_memory_utilization"] == 0.25 and llm.multiprocessing_env == "0"
    trained = _perturbed(tiny_model_dir)
    assert sync_engine.load_weights(trained.named_parameters()) == len(list(trained.parameters()))
    assert [e[0] for e in llm.events] == ["load", "reset"]
    sent = llm.events[0][1]
    expected = dict(trained.named_parameters())
    assert sent.keys() == expected.keys()
    assert all(torch.equal(sent[n], expected[n]) for n in sent)
    # the worker extension wrote them into the worker's model
    assert all(torch.equal(p, expected[n]) for n, p in llm.model.named_parameters())


def test_partial_weights_and_failed_cache_reset_are_errors(sync_engine, tiny_model_dir, monkeypatch):
    from tests.generate.fake_vllm import LLM

    trained = _perturbed(tiny_model_dir)
    partial = [(n, p) for n, p in trained.named_parameters() if "layers.1." not in n]
    with pytest.raises(GenerationError, match="left .* parameters of the vLLM model unwritten"):
        sync_engine.load_weights(partial)
    monkeypatch.setattr(LLM, "reset_result", False)
    with pytest.raises(GenerationError, match="could not reset its prefix cache"):
        sync_engine.load_weights(trained.named_parameters())


def test_weight_sync_needs_in_process_engine_and_the_flag(monkeypatch, tiny_model_dir):
    from tests.generate.fake_vllm import install

    install(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    plain = make_engine(tiny_model_dir, backend="vllm")
    assert plain.llm.kwargs["worker_extension_cls"] is None
    with pytest.raises(GenerationError, match="built without weight_sync=True"):
        plain.load_weights([])
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    with pytest.raises(GenerationError, match="VLLM_ENABLE_V1_MULTIPROCESSING=1"):
        make_engine(tiny_model_dir, backend="vllm", weight_sync=True)
