"""Fixtures for the pipeline tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The scripted judge and the fault-injecting HTTP server live with the judge tests; reuse them here.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "judge"))


@pytest.fixture(scope="session")
def tiny_policy_dir(tmp_path_factory, embedded_tokenizer):
    """A tiny random Llama with the embedded tokenizer (the pipelines' length budgets are in its tokens)."""
    from alignkit.models import tiny_random_causal_lm

    model, tok = tiny_random_causal_lm(embedded_tokenizer)
    path = tmp_path_factory.mktemp("tiny-policy")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)
