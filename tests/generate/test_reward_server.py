"""``alignkit serve --reward-model`` as a real process, over real HTTP: scores, 400, 401, 413, client."""

from __future__ import annotations

import httpx
import pytest

KEY = "reward-key-456"


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory, tiny_model_dir):
    """A tiny reward model saved like ``alignkit rm`` exports it (pad != EOS)."""
    from alignkit.models import load_reward_model, load_tokenizer
    from alignkit.train.reward import distinct_pad

    tok = load_tokenizer(tiny_model_dir)
    distinct_pad(tok)
    model = load_reward_model(tiny_model_dir)
    model.config.pad_token_id = tok.pad_token_id
    d = tmp_path_factory.mktemp("tiny-rm")
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return str(d)


@pytest.fixture(scope="module")
def server(rm_dir):
    from tests.generate.conftest import serve_in_subprocess

    yield from serve_in_subprocess(["--reward-model", rm_dir, "--api-key-env", "ALIGNKIT_TEST_RM_KEY",
                                    "--max-body-bytes", "20000"], {"ALIGNKIT_TEST_RM_KEY": KEY})


ROWS = [{"prompt": [{"role": "user", "content": "Name a fruit."}], "completion": "A banana."},
        {"prompt": [{"role": "user", "content": "Name a fruit."}],
         "completion": [{"role": "assistant", "content": "A hammer."}]}]


def test_scores_match_the_local_scorer_and_client(server, rm_dir):
    from alignkit.generate.reward_server import score_remote
    from alignkit.train.scorers import RewardScorer

    r = httpx.post(f"{server}/v1/rewards/score", json={"rows": ROWS}, headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 200 and r.json()["kind"] == "rm"
    local = RewardScorer(rm_dir).score([row["prompt"] for row in ROWS], [row["completion"] for row in ROWS])
    assert r.json()["scores"] == pytest.approx(local, abs=1e-5)
    assert score_remote(server, ROWS, api_key=KEY) == pytest.approx(local, abs=1e-5)
    assert httpx.get(f"{server}/health").json()["kind"] == "rm"  # health needs no key


def test_400_401_413(server):
    from alignkit.generate.reward_server import RemoteScoreError, score_remote

    for headers in ({}, {"Authorization": "Bearer wrong"}):
        r = httpx.post(f"{server}/v1/rewards/score", json={"rows": ROWS}, headers=headers)
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    # unauthenticated and malformed: still 401, never a validation answer
    assert httpx.post(f"{server}/v1/rewards/score", content=b"{").status_code == 401
    big = [{"prompt": "x" * 25000, "completion": "y"}]
    auth = {"Authorization": f"Bearer {KEY}"}
    assert httpx.post(f"{server}/v1/rewards/score", json={"rows": big}, headers=auth).status_code == 413
    assert httpx.post(f"{server}/v1/rewards/score", json={"rows": []}, headers=auth).status_code == 400
    assert httpx.post(f"{server}/v1/rewards/score", json={"rows": [{"prompt": "q"}]}, headers=auth).status_code == 400
    with pytest.raises(RemoteScoreError, match="HTTP 401"):
        score_remote(server, ROWS, api_key="wrong")


def test_client_retries_then_fails_on_a_dead_server():
    from alignkit.generate.reward_server import RemoteScoreError, score_remote

    with pytest.raises(RemoteScoreError, match="no answer after 2 attempts"):
        score_remote("http://127.0.0.1:9", ROWS, retries=1, backoff=0.01, timeout=2)
