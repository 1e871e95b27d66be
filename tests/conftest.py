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


# --- precision: which tests follow the probe of `precision: auto` ---------------------------------------
# Every test that lets `auto` consult the hardware probe is recorded; `make test` then re-runs the fast ones
# with ALIGNKIT_PRECISION_PROBE forced the other way from this machine's answer (see the Makefile), so a CPU
# without native bf16 also runs the bf16 paths a bf16 machine takes, and vice versa. Tests that call the
# probe in a child process cannot be seen from here: mark them `precision_sensitive`.
PROBED_OUT = os.environ.get("ALIGNKIT_PROBED_TESTS_OUT")
_probed: list[str] = []


@pytest.fixture(autouse=True)
def _watch_precision_probe(request, monkeypatch):
    from alignkit import precision

    real = precision.native_bf16
    seen = []

    def watched(*args, **kwargs):
        seen.append(True)
        return real(*args, **kwargs)

    monkeypatch.setattr(precision, "native_bf16", watched)
    yield
    node = request.node
    if (seen or node.get_closest_marker("precision_sensitive")) and not node.get_closest_marker("slow"):
        _probed.append(node.nodeid)


def pytest_sessionfinish(session, exitstatus):
    if PROBED_OUT:
        with open(PROBED_OUT, "w") as f:
            f.writelines(n + "\n" for n in dict.fromkeys(_probed))
