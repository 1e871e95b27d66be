"""Shared fixtures. Tests never touch the network: the hub is forced offline here."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def embedded_path() -> str:
    """Path of the materialised embedded model (created once per cache dir)."""
    from alignkit.models import DEFAULT_MODEL, resolve_model_path

    return resolve_model_path(DEFAULT_MODEL)


@pytest.fixture(scope="session")
def embedded_tokenizer(embedded_path):
    """The embedded model's real tokenizer (ChatML chat template): for tests of that template only."""
    from alignkit.models import load_tokenizer

    return load_tokenizer(embedded_path)


@pytest.fixture(scope="session")
def tokenizer():
    """A tiny byte-level BPE tokenizer built in code (ChatML template, eos/pad): no model files needed."""
    from alignkit.models import tiny_tokenizer

    return tiny_tokenizer()


@pytest.fixture()
def tiny_lm(tokenizer):
    """A fresh tiny random Llama over the tiny tokenizer: (model, tokenizer)."""
    from alignkit.models import tiny_random_causal_lm

    return tiny_random_causal_lm(tokenizer)
