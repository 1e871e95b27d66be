"""``alignkit serve`` as a real process, exercised by a real HTTP client over loopback."""

from __future__ import annotations

import httpx
import pytest

from alignkit.generate.engine import HFEngine

KEY = "test-key-123"


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    from tests.generate.conftest import serve_in_subprocess

    yield from serve_in_subprocess(
        ["--model", tiny_model_dir, "--served-model-name", "tiny", "--api-key-env", "ALIGNKIT_TEST_SERVE_KEY",
         "--max-body-bytes", "20000", "--default-max-tokens", "8"],
        {"ALIGNKIT_TEST_SERVE_KEY": KEY},
    )


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
        ({"model": "tiny", "messages": []}, 400, "messages"),
        ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "n": 0}, 400, "n"),
        (
            {"model": "tiny", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"},
            400,
            "temperature",
        ),
        ({"model": "tiny", "messages": [{"role": "wizard", "content": "x"}]}, 400, "messages.0.role"),
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
                "functions": [{"name": "f"}],  # the legacy API; tools: tests/generate/test_server_tools.py
            },
            400,
            "functions",
        ),
        ({"model": "tiny", "messages": [{"role": "user", "content": "w " * 2100}]}, 400, "messages"),
    ],
)
def test_invalid_requests_are_rejected(server, body, status, param):
    """Malformed fields are 400 invalid_request_error, as OpenAI and vLLM answer them (not FastAPI's 422)."""
    with _client(server) as c:
        r = c.post("/v1/chat/completions", json=body)
        assert r.status_code == status, r.text
        assert r.json()["error"]["param"] == param
        if status == 400:
            assert r.json()["error"]["type"] == "invalid_request_error"


def test_malformed_json_is_rejected(server):
    with _client(server) as c:
        r = c.post(
            "/v1/chat/completions",
            content=b'{"model": "tiny", "messages": [',
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 400
        assert r.json()["error"]["type"] == "invalid_request_error"


def test_invalid_request_raises_bad_request_error_in_the_official_openai_client(server):
    """The SDK maps status codes to exception types: a malformed field must surface as BadRequestError."""
    import openai

    client = openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0, timeout=60)
    for bad in ({"n": 0}, {"temperature": "hot"}):
        with pytest.raises(openai.BadRequestError) as exc:
            client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}], **bad)
        assert exc.value.status_code == 400 and exc.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="tiny", messages=[{"role": "wizard", "content": "x"}])
    assert exc.value.body["param"] == "messages.0.role"


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


# ----------------------------------------------------------------------------------------- streaming
def _sse(lines) -> list:
    """The JSON payloads of an SSE stream, then the literal '[DONE]'."""
    import json

    return [line[6:] if line == "data: [DONE]" else json.loads(line[6:]) for line in lines if line.startswith("data: ")]


def _joined(events) -> tuple[dict[int, str], dict[int, str]]:
    """Per choice index: the concatenated content deltas and the finish reason."""
    texts: dict[int, str] = {}
    finish: dict[int, str] = {}
    for e in events[:-1]:
        for ch in e["choices"]:
            texts[ch["index"]] = texts.get(ch["index"], "") + (ch["delta"].get("content") or "")
            if ch["finish_reason"]:
                finish[ch["index"]] = ch["finish_reason"]
    return texts, finish


def test_streamed_deltas_join_to_the_plain_answer(server):
    """Same seed, same text: greedy, n=2 sampled (tokens ending inside UTF-8 characters), and a stop string."""
    msgs = [{"role": "user", "content": "Tell me something"}]
    with _client(server) as c:
        def both(**body):
            body = {"model": "tiny", "messages": msgs, **body}
            plain = c.post("/v1/chat/completions", json=body).json()
            events = _sse(c.post("/v1/chat/completions", json={**body, "stream": True}).text.splitlines())
            assert events[-1] == "[DONE]"
            texts, finish = _joined(events)
            want = {ch["index"]: ch["message"]["content"] for ch in plain["choices"]}
            assert texts == want and finish == {ch["index"]: ch["finish_reason"] for ch in plain["choices"]}
            return want

        both(max_tokens=6, temperature=0)
        sampled = both(max_tokens=12, temperature=1.0, n=2, seed=5)
        stop = sampled[1][5:7]
        cut = both(max_tokens=12, temperature=1.0, n=2, seed=5, stop=[stop, "\uffff"])
        assert cut[1] == sampled[1][: sampled[1].index(stop)]  # the stop string did cut


def test_streaming_with_the_official_openai_client_n2_and_stop(server):
    import openai

    client = openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0, timeout=60)
    msgs = [{"role": "user", "content": "Hi"}]
    args = {"model": "tiny", "messages": msgs, "max_tokens": 12, "temperature": 1.0, "n": 2, "seed": 9}
    free = client.chat.completions.create(**args)
    stop = free.choices[0].message.content[4:6]
    whole = client.chat.completions.create(**args, stop=stop)
    texts: dict[int, str] = {}
    for chunk in client.chat.completions.create(**args, stop=stop, stream=True):
        for ch in chunk.choices:
            texts[ch.index] = texts.get(ch.index, "") + (ch.delta.content or "")
    assert texts == {ch.index: ch.message.content for ch in whole.choices}
    assert whole.choices[0].finish_reason == "stop" and stop not in texts[0]


class _GatedModel:
    """Holds the model's ``block_at``-th forward pass until ``release`` is set (at most 30 s), to freeze
    a generation half-way: ``waiting`` while it is held, ``passed`` once it went on."""

    def __init__(self, model, block_at: int):
        import threading

        self.block_at, self.calls = block_at, 0
        self.release, self.waiting, self.passed = threading.Event(), threading.Event(), threading.Event()
        self.handle = model.register_forward_pre_hook(self._hook)

    def _hook(self, *_):
        self.calls += 1
        if self.calls == self.block_at:
            self.waiting.set()
            self.release.wait(30)
            self.waiting.clear()
            self.passed.set()


class _CountingEngine(HFEngine):
    """An HFEngine that records how many prompts each ``generate`` call got."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.calls: list[int] = []

    def generate(self, prompts, params, **kw):
        self.calls.append(len(prompts))
        return super().generate(prompts, params, **kw)


@pytest.fixture()
def gated_server(tiny_lm):
    """An in-process server over the tiny model whose 4th forward pass waits for ``gate.release``."""
    from types import SimpleNamespace

    from tests.live_server import serve_app_in_thread

    from alignkit.generate.server import create_app

    model, tok = tiny_lm
    gate = _GatedModel(model, block_at=4)
    engine = _CountingEngine(model, tok)
    app = create_app(engine, "tiny", default_max_tokens=8)
    with serve_app_in_thread(app) as base:
        yield SimpleNamespace(base=base, gate=gate, engine=engine, batcher=app.app.state.batcher)
        gate.release.set()  # before the server stops, also when the test failed


def test_stream_chunks_arrive_while_the_model_is_still_decoding(gated_server):
    """The first content chunk reaches the client before the engine gets past its 4th forward pass (3
    tokens decoded, 5 to go; that pass waits for the test): tokens are sent as decoded. Sending after
    the generation, the chunk could only come once the 30 s hold ran out, and this test fails."""
    base, gate = gated_server.base, gated_server.gate
    body = {"model": "tiny", "messages": [{"role": "user", "content": "Go"}], "max_tokens": 8, "temperature": 0}
    with httpx.Client(base_url=base, timeout=60) as c:
        with c.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            seen = []
            for line in lines:
                seen.append(line)
                if '"content":' in line and '"content": ""' not in line:
                    break
            assert not gate.passed.is_set()  # mid-generation: the 4th pass has not run
            gate.release.set()
            seen += list(lines)
        plain = c.post("/v1/chat/completions", json=body).json()
    texts, finish = _joined(_sse(seen))
    assert texts == {0: plain["choices"][0]["message"]["content"]} and finish == {0: "length"}


def test_concurrent_streams_share_a_batch(gated_server):
    """Three streaming clients that arrive while a first request decodes are served by one engine call,
    each receiving its own seeded sample."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    base, gate, engine = gated_server.base, gated_server.gate, gated_server.engine
    first = {"model": "tiny", "messages": [{"role": "user", "content": "Go"}], "temperature": 0}

    def stream(seed: int) -> str:
        body = {"model": "tiny", "messages": [{"role": "user", "content": f"q{seed}"}], "temperature": 1.0,
                "seed": seed, "max_tokens": 6, "stream": True}
        with httpx.Client(base_url=base, timeout=60) as c:
            return _joined(_sse(c.post("/v1/chat/completions", json=body).text.splitlines()))[0][0]

    with ThreadPoolExecutor(4) as pool:
        blocker = pool.submit(lambda: httpx.post(f"{base}/v1/chat/completions", json=first, timeout=60))
        deadline = time.monotonic() + 30
        while not gate.waiting.is_set() and time.monotonic() < deadline:
            time.sleep(0.01)
        streams = [pool.submit(stream, seed) for seed in (1, 2, 3)]
        while gated_server.batcher._queue.qsize() < 3 and time.monotonic() < deadline:  # all three wait
            time.sleep(0.01)
        gate.release.set()
        got = [f.result(timeout=60) for f in streams]
        assert blocker.result(timeout=60).status_code == 200
    assert engine.calls == [1, 3]
    with httpx.Client(base_url=base, timeout=60) as c:
        for seed, text in zip((1, 2, 3), got, strict=True):
            body = {"model": "tiny", "messages": [{"role": "user", "content": f"q{seed}"}], "temperature": 1.0,
                    "seed": seed, "max_tokens": 6}
            assert text == c.post("/v1/chat/completions", json=body).json()["choices"][0]["message"]["content"]
