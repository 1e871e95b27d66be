"""Fixtures for recipe tests: a tiny random model saved as a HF dir, and small datasets."""

import json

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer):
    from alignkit.models import tiny_random_causal_lm

    model, tok = tiny_random_causal_lm(tokenizer, hidden=32, layers=2, heads=4, seed=0)
    d = tmp_path_factory.mktemp("tiny-model")
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return str(d)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Each test gets its own reference-log-prob cache; the embedded model's cache dir stays shared
    (linked, not materialised: only the few tests that use the embedded model pay for it, once)."""
    import os

    from alignkit.models import alignkit_home

    shared = alignkit_home() / "models"
    shared.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("ALIGNKIT_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    os.symlink(shared, tmp_path / "home" / "models")


WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma".split()


def make_pairs(n, seed=0, conversational=True):
    import random

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        q = f"Say {rng.choice(WORDS)} {i}."
        good = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 6)))
        bad = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 9))) + " no"
        if conversational:
            rows.append({"prompt": [{"role": "user", "content": q}],
                         "chosen": [{"role": "assistant", "content": good}],
                         "rejected": [{"role": "assistant", "content": bad}]})
        else:
            rows.append({"prompt": q, "chosen": good, "rejected": bad})
    return rows


def make_kway(n, k=4, seed=0):
    import random

    rng = random.Random(seed)
    return [{"prompt": [{"role": "user", "content": f"Name a word {i}."}],
             "completions": [[{"role": "assistant", "content": " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 5)))}]
                             for _ in range(k)],
             "rewards": [round(rng.uniform(0, 10), 2) for _ in range(k)]} for i in range(n)]


def make_sft(n, seed=0):
    import random

    rng = random.Random(seed)
    return [{"messages": [{"role": "user", "content": f"Repeat {i}"},
                          {"role": "assistant", "content": " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12)))}]}
            for i in range(n)]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)
