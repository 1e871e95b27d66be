"""Judge: persistent cache, retries with backoff and jitter, parse-retry policy, accounting, concurrency."""

from __future__ import annotations

import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from alignkit.judge.backends import BackendAnswer, PermanentError, TransientError, parse_judge_spec
from alignkit.judge.cache import CallCache
from alignkit.judge.client import Judge, JudgeCallError, ParseError


class Backend:
    kind = "fake"
    model_id = "m"
    tokenizer = None
    context_window = None

    def __init__(self, script=None):
        self.script = list(script or [])  # items: exception instances or answer texts; then "ok [[5]]"
        self.calls = []
        self.lock = threading.Lock()

    def call(self, messages, max_tokens, temperature, seed, stop=(), top_logprobs=0):
        with self.lock:
            self.calls.append((messages[-1]["content"], temperature, seed))
            item = self.script.pop(0) if self.script else "ok [[5]]"
        if isinstance(item, Exception):
            raise item
        return BackendAnswer(item, 10, 3, "stop")


MSG = [{"role": "user", "content": "rate this"}]


def _judge(backend, cache=None, sleeps=None, **kw):
    return Judge(
        backend,
        cache,
        backoff_base=1.0,
        backoff_max=8.0,
        sleep=(sleeps.append if sleeps is not None else lambda s: None),
        **kw,
    )


def test_cache_hits_cost_nothing_and_persist_across_runs(tmp_path):
    path = tmp_path / "cache.sqlite"
    b1 = Backend()
    j1 = _judge(b1, CallCache(path))
    a = j1.complete(MSG, 64, 0.01)
    b = j1.complete(MSG, 64, 0.01)
    assert (a.cached, b.cached, len(b1.calls)) == (False, True, 1)
    assert j1.usage.calls == 1 and j1.usage.cache_hits == 1 and j1.usage.cached_prompt_tokens == 10
    j1.close()
    # a new process (new Judge, same file) repeats nothing
    b2 = Backend()
    j2 = _judge(b2, CallCache(path))
    assert j2.complete(MSG, 64, 0.01).text == a.text and b2.calls == []
    # any change to the request is a different call: params, attempt index, messages
    j2.complete(MSG, 65, 0.01)
    j2.complete(MSG, 64, 0.95)
    j2.complete(MSG, 64, 0.01, attempt=1)
    j2.complete([{"role": "user", "content": "rate that"}], 64, 0.01)
    assert len(b2.calls) == 4
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("SELECT COUNT(*) FROM calls").fetchone()[0] == 5


def test_transient_errors_are_retried_with_exponential_backoff_and_jitter():
    sleeps = []
    b = Backend([TransientError("HTTP 500"), TransientError("timeout"), TransientError("malformed JSON")])
    j = _judge(b, sleeps=sleeps, max_retries=5)
    assert j.complete(MSG, 8, 0.01).text == "ok [[5]]"
    assert len(b.calls) == 4 and j.usage.transient_retries == 3 and j.usage.calls == 1
    # delay i is in [d/2, d] with d = base * 2**i
    for i, s in enumerate(sleeps):
        assert 2**i / 2 <= s <= 2**i
    assert len(set(sleeps)) == 3  # jittered
    # the same seed is sent on every retry of one request (reproducible on seeded servers)
    assert len({seed for _, _, seed in b.calls}) == 1


def test_retry_after_is_honoured_and_capped():
    sleeps = []
    j = _judge(
        Backend([TransientError("HTTP 429", retry_after=5.0), TransientError("HTTP 429", retry_after=99)]),
        sleeps=sleeps,
    )
    j.complete(MSG, 8, 0.01)
    assert sleeps[0] == 5.0 and sleeps[1] == 8.0  # capped at backoff_max


def test_retries_exhausted_or_permanent_errors_raise_and_are_not_cached():
    b = Backend([TransientError("HTTP 503")] * 3)
    j = _judge(b, max_retries=2)
    with pytest.raises(JudgeCallError, match="gave up after 3 tries: HTTP 503"):
        j.complete(MSG, 8, 0.01)
    assert len(j.cache) == 0 and j.usage.call_errors == 1
    assert j.complete(MSG, 8, 0.01).text == "ok [[5]]"  # next time it is tried again
    b2 = Backend([PermanentError("HTTP 400: prompt too long")])
    j2 = _judge(b2, max_retries=5)
    with pytest.raises(JudgeCallError, match="prompt too long"):
        j2.complete(MSG, 8, 0.01)
    assert len(b2.calls) == 1  # not retried


def _score(text):
    import re

    found = re.findall(r"\[\[(\d+)\]\]", text)
    if not found:
        raise ParseError("no score")
    return int(found[-1])


def test_parse_retry_policy_temperatures_and_recorded_failure():
    b = Backend(["no score here", "still none", "finally [[7]]"])
    j = _judge(b)
    out = j.complete_parsed(MSG, _score, 32)
    assert out.ok and out.value == 7 and out.attempts == 3
    assert [t for _, t, _ in b.calls] == [0.01, 0.95, 0.95]
    assert j.usage.parse_retries == 2 and j.usage.parse_failures == 0
    b2 = Backend(["nothing"] * 5)
    j2 = _judge(b2)
    out = j2.complete_parsed(MSG, _score, 32)
    assert not out.ok and out.attempts == 5 and "unparseable after 5 attempts" in out.error
    assert out.text == "nothing" and len(b2.calls) == 5 and j2.usage.parse_failures == 1
    # a rerun on the same cache reproduces the failure without calling again
    j3 = _judge(Backend(), j2.cache)
    again = j3.complete_parsed(MSG, _score, 32)
    assert not again.ok and j3.backend.calls == [] and j3.usage.cache_hits == 5


def test_concurrency_is_bounded():
    in_flight, peak = 0, 0
    lock = threading.Lock()

    class Slow(Backend):
        def call(self, messages, max_tokens, temperature, seed, stop=(), top_logprobs=0):
            nonlocal in_flight, peak
            with lock:
                in_flight += 1
                peak = max(peak, in_flight)
            time.sleep(0.02)
            with lock:
                in_flight -= 1
            return BackendAnswer("[[1]]", 1, 1, "stop")

    j = _judge(Slow(), concurrency=3)
    with ThreadPoolExecutor(10) as pool:
        list(pool.map(lambda i: j.complete([{"role": "user", "content": str(i)}], 4, 0.01), range(30)))
    assert peak == 3 and j.usage.calls == 30


@pytest.mark.parametrize(
    "spec, parsed",
    [
        ("local:smollm2-135m-instruct", ("local", "smollm2-135m-instruct", None)),
        ("openai:http://127.0.0.1:8000/v1#glm-4", ("openai", "glm-4", "http://127.0.0.1:8000/v1")),
        (
            "openai:https://api.example.com/v1#org/model-2",
            ("openai", "org/model-2", "https://api.example.com/v1"),
        ),
    ],
)
def test_judge_spec_parsing(spec, parsed):
    assert parse_judge_spec(spec) == parsed


@pytest.mark.parametrize("spec", ["gpt-4", "openai:http://x/v1", "openai:ftp://x#m", "hf:foo", "local:"])
def test_bad_judge_specs_are_refused(spec):
    with pytest.raises(ValueError, match="judge"):
        parse_judge_spec(spec)


class Continuing(Backend):
    """Answers free text without a score, and '7' / 'Fully supported' when continuing a cue."""

    def call(self, messages, max_tokens, temperature, seed, stop=(), top_logprobs=0):
        with self.lock:
            self.calls.append((messages, temperature, list(stop), max_tokens))
        if messages[-1]["role"] == "assistant":
            return BackendAnswer("7", 10, 1, "stop")
        return BackendAnswer("A long ramble with no rating at all.", 10, 8, "stop")


def test_format_forcing_after_analysis_continues_the_judges_own_answer():
    from alignkit.judge.client import FormatForcing

    b = Continuing()
    j = _judge(b)
    force = FormatForcing("\n[Rating]\n[[", "]]", max_tokens=6)
    out = j.complete_parsed(MSG, _score, 64, force=force, force_mode="after_analysis")
    assert out.ok and out.value == 7 and out.forced and out.attempts == 1
    assert out.text == "A long ramble with no rating at all.\n[Rating]\n[[7]]"
    free, cont = b.calls
    assert free[0] == MSG and free[3] == 64
    assert cont[0] == [
        *MSG,
        {"role": "assistant", "content": "A long ramble with no rating at all.\n[Rating]\n[["},
    ]
    assert cont[2] == ["]]"] and cont[3] == 6 and cont[1] == 0.01
    assert j.usage.forced_formats == 1


def test_format_forcing_direct_skips_the_free_answer_and_off_is_official():
    from alignkit.judge.client import FormatForcing

    b = Continuing()
    j = _judge(b)
    force = FormatForcing("\n[Rating]\n[[", "]]")
    out = j.complete_parsed(MSG, _score, 64, force=force, force_mode="direct")
    assert out.ok and out.value == 7 and out.text == "[Rating]\n[[7]]" and len(b.calls) == 1
    off = _judge(Continuing()).complete_parsed(MSG, _score, 64, attempts=2, force=force, force_mode="off")
    assert not off.ok and off.attempts == 2 and not off.forced
    with pytest.raises(ValueError, match="needs a FormatForcing"):
        j.complete_parsed(MSG, _score, 64, force_mode="direct")


def test_identical_requests_in_flight_make_one_paid_call():
    """Single flight over real loopback HTTP: 8 threads ask the same thing at once, the server sees one call."""
    from judge_fakes import FaultServer

    from alignkit.judge.client import make_judge

    msg = [{"role": "user", "content": "Rate how helpful\n[Answer]\nThe sky is blue.\n[Analysis]"}]
    with FaultServer(faults=False, delay=0.3) as server:
        judge = make_judge(f"openai:{server.url}#m", None, concurrency=8, max_retries=0)
        start = threading.Barrier(8)

        def ask(_):
            start.wait()
            return judge.complete(msg, 32, 0.01)

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(ask, range(8)))
        judge.close()
    assert server.requests == 1
    assert len({a.text for a in answers}) == 1 and sum(not a.cached for a in answers) == 1
    assert judge.usage.calls == 1 and judge.usage.cache_hits == 7


def test_single_flight_follower_retries_after_the_leader_fails():
    """A failed call is not cached: a request waiting on it then makes its own call."""
    gate = threading.Event()

    class Slow(Backend):
        def call(self, *a, **kw):
            with self.lock:
                first = not self.calls
            if first:
                gate.wait(5)
            return super().call(*a, **kw)

    b = Slow([PermanentError("HTTP 400 refused")])
    j = _judge(b, max_retries=0)
    with ThreadPoolExecutor(2) as pool:
        lead = pool.submit(j.complete, MSG, 8, 0.01)
        time.sleep(0.1)
        follow = pool.submit(j.complete, MSG, 8, 0.01)
        time.sleep(0.1)
        gate.set()
        with pytest.raises(JudgeCallError):
            lead.result()
        assert follow.result().text == "ok [[5]]"
    assert len(b.calls) == 2


def test_judge_cache_setting_has_one_meaning(tmp_path):
    from alignkit.config import load_config
    from alignkit.judge.client import JudgeConfig, judge_cache_file

    default = tmp_path / "out.judge_cache.sqlite"
    assert judge_cache_file(load_config(JudgeConfig), default) == str(default)  # true: the default file
    assert judge_cache_file(load_config(JudgeConfig, None, ["cache=false"]), default) is None
    assert judge_cache_file(load_config(JudgeConfig, None, [f"cache={tmp_path}/c.db"]), default) == f"{tmp_path}/c.db"
    with pytest.raises(ValueError, match="judge.cache: true needs a default file"):
        judge_cache_file(load_config(JudgeConfig), None)
