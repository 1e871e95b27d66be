"""A stand-in for the ``vllm`` package on CPU: the slice of the offline API alignkit calls (``LLM``,
``SamplingParams``, ``collective_rpc``, ``reset_prefix_cache``), run by a Hugging Face model, recording
every call in ``LLM.events`` so tests can check what the engine received and in which order.

Like vLLM, the worker extension is resolved from its dotted name and mixed into the worker, and its
methods run against ``worker.model_runner.model``, whose ``load_weights`` copies named tensors in place
and returns the names it wrote (an unknown name raises, as vLLM's loaders do).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import os
import sys
import types
from dataclasses import dataclass
from types import SimpleNamespace

import torch


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    max_tokens: int = 16
    min_tokens: int = 0
    stop: list | None = None
    stop_token_ids: list | None = None
    seed: int | None = None
    logprobs: int | None = None


class _Model:
    """The worker's model: ``load_weights`` copies in place and returns the names written."""

    def __init__(self, hf_model):
        self.hf = hf_model

    def named_parameters(self):
        return self.hf.named_parameters()

    def load_weights(self, weights):
        params = dict(self.hf.named_parameters())
        loaded = set()
        with torch.no_grad():
            for name, tensor in weights:
                params[name].data.copy_(tensor)  # KeyError on a name the model does not have
                loaded.add(name)
        return loaded


class LLM:
    """``vllm.LLM`` over a HF model on CPU; ``events``: ("load", {name: tensor}), ("reset",),
    ("generate", n_prompts, temperature)."""

    reset_result: bool | None = True

    def __init__(self, model: str, dtype: str = "auto", max_num_seqs: int = 256, worker_extension_cls=None,
                 **kwargs):
        from transformers import AutoModelForCausalLM

        from alignkit.models import load_tokenizer

        self.kwargs = {"dtype": dtype, "max_num_seqs": max_num_seqs, "worker_extension_cls": worker_extension_cls,
                       **kwargs}
        self.multiprocessing_env = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING")
        self.model = AutoModelForCausalLM.from_pretrained(model).eval()
        self.tokenizer = load_tokenizer(model)
        self.events: list[tuple] = []
        bases = ()
        if worker_extension_cls:
            module, name = worker_extension_cls.rsplit(".", 1)
            bases = (getattr(importlib.import_module(module), name),)
        self.worker = type("Worker", bases, {})()
        self.worker.model_runner = SimpleNamespace(model=_Model(self.model))
        self.llm_engine = SimpleNamespace(model_config=SimpleNamespace(max_model_len=2048))

    def get_tokenizer(self):
        return self.tokenizer

    def collective_rpc(self, method, timeout=None, args=(), kwargs=None):
        if method == "alignkit_load_weights":
            self.events.append(("load", {n: t.detach().clone() for n, t in args[0]}))
        return [getattr(self.worker, method)(*args, **(kwargs or {}))]

    def reset_prefix_cache(self):
        self.events.append(("reset",))
        return self.reset_result

    @torch.no_grad()
    def generate(self, prompts, sampling_params, use_tqdm=False):
        self.events.append(("generate", len(prompts), sampling_params[0].temperature))
        outs = []
        for prompt, sp in zip(prompts, sampling_params, strict=True):
            comps = [self._decode(prompt["prompt_token_ids"], sp, j) for j in range(sp.n)]
            outs.append(SimpleNamespace(outputs=comps))
        return outs

    def _decode(self, ids, sp, j):
        gen = torch.Generator().manual_seed((sp.seed or 0) + j)
        x, out, logprobs = torch.tensor([ids]), [], []
        for _ in range(sp.max_tokens):
            logits = self.model(input_ids=x).logits[0, -1].float()
            if sp.temperature == 0:
                tok = int(logits.argmax())
            else:
                tok = int(torch.multinomial(torch.softmax(logits / sp.temperature, -1), 1, generator=gen))
            if sp.logprobs is not None:  # the sampled token only; processed (tempered) when the engine says so
                scale = sp.temperature if self.kwargs.get("logprobs_mode") == "processed_logprobs" else 1.0
                lp = torch.log_softmax(logits / (scale or 1.0), -1)[tok]
                logprobs.append({tok: SimpleNamespace(logprob=float(lp))})
            out.append(tok)
            x = torch.cat([x, torch.tensor([[tok]])], dim=1)
            if tok == self.tokenizer.eos_token_id:
                break
        finish = "stop" if out[-1] == self.tokenizer.eos_token_id else "length"
        text = self.tokenizer.decode(out, skip_special_tokens=True)
        return SimpleNamespace(text=text, token_ids=out, finish_reason=finish,
                               logprobs=logprobs if sp.logprobs is not None else None)


def install(monkeypatch) -> types.ModuleType:
    """Make ``import vllm`` (and ``importlib.util.find_spec("vllm")``) find this fake for one test."""
    module = types.ModuleType("vllm")
    module.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
    module.LLM, module.SamplingParams = LLM, SamplingParams
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING", raising=False)  # restored after the test
    return module
