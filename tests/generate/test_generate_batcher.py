"""BatchingQueue: concurrent callers share engine batches; a refused request fails alone."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from alignkit.generate.batcher import BatchingQueue
from alignkit.generate.engine import GenerationError, HFEngine, SamplingParams


class _Recording(HFEngine):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.calls: list[int] = []
        self.gate = threading.Event()

    def generate(self, prompts, params, **kw):
        self.gate.wait(10)  # hold the first batch so the others queue up behind it
        self.calls.append(len(prompts))
        return super().generate(prompts, params, **kw)


def test_concurrent_requests_are_batched_and_match_direct_calls(tiny_lm):
    model, tok = tiny_lm
    engine = _Recording(model, tok, batch_size=8)
    q = BatchingQueue(engine)
    prompts = [f"question {i}" for i in range(6)]
    params = [SamplingParams(max_new_tokens=4, temperature=1.0, seed=i) for i in range(6)]
    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(q.submit, p, sp) for p, sp in zip(prompts, params, strict=True)]
        deadline = time.monotonic() + 30
        while q._queue.qsize() < 5 and time.monotonic() < deadline:  # one in the engine, five waiting
            time.sleep(0.01)
        engine.gate.set()
        got = [f.result(timeout=60) for f in futures]
    q.close()
    assert engine.calls == [1, 5]  # the five that queued behind the first one shared a batch
    direct = HFEngine(model, tok)
    for p, sp, res in zip(prompts, params, got, strict=True):
        assert res.completions[0].token_ids == direct.generate([p], sp)[0].completions[0].token_ids


def test_a_refused_request_fails_alone(tiny_lm):
    model, tok = tiny_lm
    engine = _Recording(model, tok)
    q = BatchingQueue(engine)
    sp = SamplingParams(max_new_tokens=3)
    with ThreadPoolExecutor(3) as pool:
        ok1 = pool.submit(q.submit, "fine", sp)
        bad = pool.submit(q.submit, "w " * 3000, sp)
        ok2 = pool.submit(q.submit, "also fine", sp)
        engine.gate.set()
        assert len(ok1.result(timeout=60).completions) == 1
        assert len(ok2.result(timeout=60).completions) == 1
        with pytest.raises(GenerationError, match="context window"):
            bad.result(timeout=60)
    q.close()


def test_token_listeners_withdrawn_requests_and_broken_listeners(tiny_lm):
    """Each listener hears its own request's tokens; a request cancelled while queued is never run; a
    listener that raises is detached without failing its batch."""
    model, tok = tiny_lm
    engine = _Recording(model, tok)
    q = BatchingQueue(engine)
    sp = SamplingParams(max_new_tokens=4, temperature=1.0, seed=3)
    first = q.submit_async("first", sp)
    deadline = time.monotonic() + 30
    while not q._queue.empty() and time.monotonic() < deadline:  # the worker holds it at the gate
        time.sleep(0.01)
    time.sleep(0.05)
    heard: list[tuple[int, int]] = []

    def broken(j, token):
        raise RuntimeError("client gone")

    listened = q.submit_async("a", sp, on_token=lambda j, token: heard.append((j, token)))
    withdrawn = q.submit_async("b", sp)
    with_broken = q.submit_async("c", sp, on_token=broken)
    assert withdrawn.cancel()
    engine.gate.set()
    assert listened.result(timeout=60).completions[0].token_ids == [t for _, t in heard] and {j for j, _ in heard} == {0}
    assert len(with_broken.result(timeout=60).completions[0].token_ids) > 0 and first.result(timeout=60)
    assert withdrawn.cancelled() and engine.calls == [1, 2]  # the withdrawn one never reached the engine
    q.close()
