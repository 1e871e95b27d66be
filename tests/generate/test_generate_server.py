"""``alignkit serve`` as a real process, exercised by a real HTTP client over loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

KEY = "test-key-123"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    port = _free_port()
    env = {**os.environ, "ALIGNKIT_TEST_SERVE_KEY": KEY, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "alignkit",
            "serve",
            "--model",
            tiny_model_dir,
            "--served-model-name",
            "tiny",
            "--port",
            str(port),
            "--api-key-env",
            "ALIGNKIT_TEST_SERVE_KEY",
            "--max-body-bytes",
            "20000",
            "--default-max-tokens",
            "8",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            pytest.fail(f"server exited early:\n{proc.stdout.read()}")
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("server did not come up within 120 s")
        time.sleep(0.3)
    yield base
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def _client(base, key=KEY):
    return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"} if key else {}, timeout=60)


def test_models_and_chat_completion(server):
    with _client(server) as c:
        models = c.get("/v1/models").json()
        assert [m["id"] for m in models["data"]] == ["tiny"]
        body = {
            "model": "tiny",
            "messages": [{"role": "user", "content": "Say hi"}],
            "n": 2,
            "temperature": 0.9,
            "max_tokens": 5,
            "seed": 11,
        }
        r = c.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        data = r.json()
        assert data["object"] == "chat.completion" and len(data["choices"]) == 2
        assert all(
            ch["message"]["role"] == "assistant" and ch["finish_reason"] in ("stop", "length")
            for ch in data["choices"]
        )
        usage = data["usage"]
        assert usage["prompt_tokens"] > 5 and 0 < usage["completion_tokens"] <= 10
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        # the same seed gives the same samples
        again = c.post("/v1/chat/completions", json=body).json()
        assert [ch["message"] for ch in again["choices"]] == [ch["message"] for ch in data["choices"]]
        # default max tokens from --default-max-tokens, greedy and a stop string
        greedy = {"model": "tiny", "messages": [{"role": "user", "content": "Go"}], "temperature": 0}
        text = c.post("/v1/chat/completions", json=greedy).json()["choices"][0]["message"]["content"]
        stop = text[3:5]
        cut = c.post("/v1/chat/completions", json={**greedy, "stop": stop}).json()["choices"][0]
        assert cut["finish_reason"] == "stop" and cut["message"]["content"] == text[: text.index(stop)]


def test_wrong_or_missing_key_is_401(server):
    body = {"model": "tiny", "messages": [{"role": "user", "content": "x"}]}
    for key in ("wrong", None):
        with _client(server, key) as c:
            r = c.post("/v1/chat/completions", json=body)
            assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
            assert c.get("/v1/models").status_code == 401


def test_oversized_request_is_413(server):
    body = {"model": "tiny", "messages": [{"role": "user", "content": "x" * 30000}]}
    with _client(server) as c:
        r = c.post("/v1/chat/completions", json=body)
        assert r.status_code == 413
        # also when the size is not declared up front (chunked upload)
        import json

        payload = json.dumps(body).encode()

        def chunks():
            for i in range(0, len(payload), 4096):
                yield payload[i : i + 4096]

        r = c.post("/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413


@pytest.mark.parametrize(
    "body, status, param",
    [
        ({"model": "tiny", "messages": []}, 422, "messages"),
        ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "n": 0}, 422, "n"),
        (
            {"model": "tiny", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"},
            422,
            "temperature",
        ),
        ({"model": "tiny", "messages": [{"role": "wizard", "content": "x"}]}, 422, "messages.0.role"),
        ({"model": "other", "messages": [{"role": "user", "content": "x"}]}, 404, "model"),
        (
            {"model": "tiny", "messages": [{"role": "user", "content": "x"}], "stream": True, "logprobs": True},
            400,
            "logprobs",
        ),
        (
            {
                "model": "tiny",
                "messages": [{"role": "user", "content": "x"}],
                "tools": [{"type": "function"}],
            },
            400,
            "tools",
        ),
        ({"model": "tiny", "messages": [{"role": "user", "content": "w " * 2100}]}, 400, "messages"),
    ],
)
def test_invalid_requests_are_rejected(server, body, status, param):
    with _client(server) as c:
        r = c.post("/v1/chat/completions", json=body)
        assert r.status_code == status, r.text
        assert r.json()["error"]["param"] == param


def test_malformed_json_is_rejected(server):
    with _client(server) as c:
        r = c.post(
            "/v1/chat/completions",
            content=b'{"model": "tiny", "messages": [',
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 422


def test_alignkit_judge_client_talks_to_alignkit_serve(server, monkeypatch):
    from alignkit.judge.backends import OpenAIBackend, PermanentError

    monkeypatch.setenv("ALIGNKIT_JUDGE_API_KEY", KEY)
    backend = OpenAIBackend(f"{server}/v1", "tiny", timeout=60)
    ans = backend.call([{"role": "user", "content": "Rate this."}], 6, 0.01, seed=3, stop=["\n\n"])
    assert isinstance(ans.text, str) and ans.prompt_tokens > 0 and 0 < ans.completion_tokens <= 6
    assert (
        backend.call([{"role": "user", "content": "Rate this."}], 6, 0.01, seed=3, stop=["\n\n"]).text
        == ans.text
    )
    backend.close()
    monkeypatch.setenv("ALIGNKIT_JUDGE_API_KEY", "wrong")
    bad = OpenAIBackend(f"{server}/v1", "tiny", timeout=60)
    with pytest.raises(PermanentError, match="HTTP 401.*ALIGNKIT_JUDGE_API_KEY"):
        bad.call([{"role": "user", "content": "x"}], 4, 0.01, seed=None)
    bad.close()


def test_continue_final_message(server):
    msgs = [{"role": "user", "content": "Rate it."}, {"role": "assistant", "content": "Rating: [["}]
    with _client(server) as c:
        ok = c.post(
            "/v1/chat/completions",
            json={
                "model": "tiny",
                "messages": msgs,
                "max_tokens": 3,
                "temperature": 0,
                "continue_final_message": True,
                "add_generation_prompt": False,
            },
        )
        assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] <= 3
        for extra in ({}, {"continue_final_message": True}):  # a new turn after it is not offered
            r = c.post("/v1/chat/completions", json={"model": "tiny", "messages": msgs, **extra})
            assert r.status_code == 400
        r = c.post(
            "/v1/chat/completions",
            json={
                "model": "tiny",
                "messages": msgs[:1],
                "continue_final_message": True,
                "add_generation_prompt": False,
            },
        )
        assert r.status_code == 400 and r.json()["error"]["param"] == "continue_final_message"


def test_logprobs_in_openai_format(server):
    body = {
        "model": "tiny",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 3,
        "temperature": 0,
        "logprobs": True,
        "top_logprobs": 4,
    }
    with _client(server) as c:
        data = c.post("/v1/chat/completions", json=body).json()
        content = data["choices"][0]["logprobs"]["content"]
        assert len(content) == data["usage"]["completion_tokens"]
        for pos in content:
            tops = pos["top_logprobs"]
            assert len(tops) == 4 and tops[0]["token"] == pos["token"]  # greedy: the best token was chosen
            assert [t["logprob"] for t in tops] == sorted((t["logprob"] for t in tops), reverse=True)
            assert all(t["logprob"] <= 0 for t in tops)
        assert "".join(p["token"] for p in content) == data["choices"][0]["message"]["content"]
        bad = c.post("/v1/chat/completions", json={**body, "logprobs": False})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "top_logprobs"


def test_streaming_with_the_official_openai_client(server):
    """stream=true: OpenAI chat.completion.chunk events, read by the official client; same text as non-streamed."""
    import openai

    client = openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0, timeout=60)
    msgs = [{"role": "user", "content": "Tell me something"}]
    whole = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=6, temperature=0)
    chunks = list(client.chat.completions.create(model="tiny", messages=msgs, max_tokens=6, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert all(ch.object == "chat.completion.chunk" and ch.model == "tiny" for ch in chunks)
    with_choice = [ch for ch in chunks if ch.choices]
    assert with_choice[0].choices[0].delta.role == "assistant"
    text = "".join(ch.choices[0].delta.content or "" for ch in with_choice)
    assert text == whole.choices[0].message.content
    assert len([ch for ch in with_choice if ch.choices[0].delta.content]) > 1  # token by token, not one blob
    assert with_choice[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    assert [ch.choices[0].finish_reason for ch in with_choice[:-1]] == [None] * (len(with_choice) - 1)
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    # auth and the body limit hold for streamed requests too
    bad = openai.OpenAI(base_url=f"{server}/v1", api_key="wrong", max_retries=0, timeout=60)
    with pytest.raises(openai.AuthenticationError):
        list(bad.chat.completions.create(model="tiny", messages=msgs, max_tokens=2, stream=True))
    with pytest.raises(openai.APIStatusError) as exc:
        list(client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x" * 30000}],
                                            max_tokens=2, stream=True))
    assert exc.value.status_code == 413


def test_stream_ends_with_done(server):
    body = {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3, "n": 2,
            "temperature": 0.9, "seed": 1, "stream": True}
    with _client(server) as c:
        r = c.post("/v1/chat/completions", json=body)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [line[len("data: "):] for line in r.text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        import json

        finals = [json.loads(e)["choices"][0] for e in events[:-1] if json.loads(e)["choices"][0]["finish_reason"]]
        assert sorted(f["index"] for f in finals) == [0, 1]


def test_malformed_content_length_is_400(server):
    """A Content-Length that is not a number is a bad request (both servers share this guard)."""
    import http.client

    host, port = server.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.putrequest("POST", "/v1/chat/completions")
    conn.putheader("Authorization", f"Bearer {KEY}")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", "12abc")
    conn.endheaders()
    resp = conn.getresponse()
    assert resp.status == 400
    conn.close()


@pytest.mark.parametrize("text", ["Hello world, how are you? 😀 naïve café.\nNext", "日本語のテキスト", "  two  spaces  "])
def test_stream_pieces_join_to_the_text(tokenizer, text):
    """Streamed deltas split at token boundaries and always join to the exact completion text."""
    from types import SimpleNamespace

    from alignkit.generate.server import _text_pieces

    ids = tokenizer(text, add_special_tokens=False).input_ids
    full = tokenizer.decode(ids, skip_special_tokens=True)
    pieces = _text_pieces(tokenizer, SimpleNamespace(text=full, token_ids=ids))
    assert "".join(pieces) == full and len(pieces) > 1 and all(pieces)
    cut = full[: len(full) // 2]  # text cut at a stop string: the pieces stop there
    assert "".join(_text_pieces(tokenizer, SimpleNamespace(text=cut, token_ids=ids))) == cut
