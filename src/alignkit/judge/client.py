"""The one judge interface: cached, retried, bounded, accounted calls to any backend.

``Judge.complete(messages, max_tokens, temperature, attempt)`` answers one chat request:

1. the request (model id, messages, max_tokens, temperature, stop sequences, attempt index) is
   hashed (SHA-256) and looked up in the persistent :class:`CallCache`; a hit costs nothing and is
   counted as such; identical requests in flight at the same time make one call (single flight:
   the others wait for it and read its answer from the cache);
2. otherwise the backend is called under a semaphore (at most ``concurrency`` calls in flight);
   transient failures (HTTP 5xx/429/408, timeouts, malformed or truncated JSON) are retried up to
   ``max_retries`` times with exponential backoff and jitter, delay
   ``d = min(backoff_max, backoff_base * 2**i)``, sleep ``d/2 + U(0, d/2)`` (or the server's
   Retry-After when larger); permanent failures (other 4xx, refused prompts) are not retried;
3. the answer is committed to the cache at once, and its tokens are added to the usage counters.

``Judge.complete_parsed`` adds the answer-parsing policy of LongReward (METHODS §1.3-1.4): up to
``attempts`` (5) attempts, the first at temperature 0.01 and the rest at 0.95, each a distinct cached
request; an answer the parser rejects triggers the next attempt; after the last one the outcome is a
recorded failure (``Parsed.ok == False``), never a silent score. A call that still fails after its
transport retries raises :class:`JudgeCallError` (not cached, so a rerun tries it again).
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field

from alignkit.config import Precision, StrictModel
from alignkit.judge.backends import (
    DEFAULT_API_KEY_ENV,
    LocalBackend,
    OpenAIBackend,
    PermanentError,
    TransientError,
    parse_judge_spec,
)
from alignkit.judge.cache import CachedAnswer, CallCache, request_key
from alignkit.models import DEFAULT_MODEL


class JudgeCallError(RuntimeError):
    """A judge call that failed for good (after retries, or refused by the backend)."""


class ParseError(ValueError):
    """The judge's answer does not have the required form (for example no ``[[score]]``)."""


@dataclass
class JudgeAnswer:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    cached: bool
    attempt: int
    top_logprobs: list[dict[str, float]] | None = None


@dataclass
class Parsed:
    """Outcome of :meth:`Judge.complete_parsed`: the parsed value or a recorded failure."""

    ok: bool
    value: Any = None
    text: str = ""  # the answer the value was parsed from (or the last unparseable one)
    attempts: int = 0
    error: str | None = None
    forced: bool = False  # the value came from a format-forced continuation (see FormatForcing)


@dataclass(frozen=True)
class FormatForcing:
    """How to force an answer format on a judge too weak to follow it (opt-in, see ``force_mode``).

    The judge's reply is continued from an assistant-message prefix ending in ``cue`` (for example
    ``"\\n[Rating]\\n[["``); the continuation is stopped at ``close`` (``"]]"``) or another of
    ``stop``, so the judge itself chooses only the value, and ``cue + continuation + close`` is what
    gets parsed (a continuation cut by ``max_tokens`` is closed too; the parser then judges it). The
    backend must be able to continue a final assistant message (local engines, ``alignkit serve``, vLLM).
    """

    cue: str
    close: str
    max_tokens: int = 8
    keep_answer: bool = True
    """after_analysis mode: continue the judge's own unparseable answer (False: replace it by the cue)."""
    stop: tuple[str, ...] = ()
    """Extra stop sequences besides ``close`` (e.g. a newline ends a one-line statement)."""


@dataclass
class Usage:
    """Token and call accounting for one judge (thread-safe through the owning Judge's lock)."""

    calls: int = 0  # requests that reached the backend and were answered
    cache_hits: int = 0
    transient_retries: int = 0
    call_errors: int = 0  # calls given up (retries exhausted or permanent error)
    parse_retries: int = 0
    parse_failures: int = 0
    forced_formats: int = 0  # format-forced continuations requested (weak-judge mode)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0  # tokens a cache hit saved
    cached_completion_tokens: int = 0
    by_error: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {k: (dict(v) if isinstance(v, dict) else v) for k, v in self.__dict__.items()}


class Judge:
    """Cache + retries + bounded concurrency + accounting around one backend."""

    def __init__(
        self,
        backend,
        cache: CallCache | None = None,
        concurrency: int = 4,
        max_retries: int = 5,
        backoff_base: float = 1.0,
        backoff_max: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        seed: int = 0,
    ):
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1 (got {concurrency})")
        self.backend = backend
        self.cache = cache if cache is not None else CallCache(None)
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._sleep = sleep
        self._rng = random.Random(seed)
        self._slots = threading.BoundedSemaphore(concurrency)
        self._lock = threading.Lock()
        self._in_flight: dict[str, threading.Event] = {}  # request key -> set when its call ends
        self.usage = Usage()

    @property
    def model_id(self) -> str:
        return f"{self.backend.kind}:{self.backend.model_id}"

    @property
    def tokenizer(self):
        return self.backend.tokenizer

    @property
    def context_window(self) -> int | None:
        return self.backend.context_window

    def _count(self, **inc: int) -> None:
        with self._lock:
            for k, v in inc.items():
                setattr(self.usage, k, getattr(self.usage, k) + v)

    def _count_error(self, message: str) -> None:
        kind = message.split(":", 1)[0][:40]
        with self._lock:
            self.usage.by_error[kind] = self.usage.by_error.get(kind, 0) + 1

    def complete(
        self,
        messages: list[dict],
        max_tokens: int,
        temperature: float,
        attempt: int = 0,
        stop: Sequence[str] = (),
        top_logprobs: int = 0,
    ) -> JudgeAnswer:
        request = {
            "model": self.model_id,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "stop": list(stop),
            "top_logprobs": top_logprobs,
            "attempt": attempt,
        }
        key = request_key(request)
        while True:
            hit = self.cache.get(key)
            if hit is not None:
                return self._from_cache(hit, attempt)
            # Single flight: identical requests in flight at once make one paid call; the others
            # wait for it and read its answer from the cache (or try themselves if it failed).
            with self._lock:
                flight = self._in_flight.get(key)
                leader = flight is None
                if leader:
                    flight = self._in_flight[key] = threading.Event()
            if not leader:
                flight.wait()
                continue
            try:
                return self._call(key, request, messages, max_tokens, temperature, attempt, stop, top_logprobs)
            finally:
                with self._lock:
                    del self._in_flight[key]
                flight.set()

    def _from_cache(self, hit: CachedAnswer, attempt: int) -> JudgeAnswer:
        self._count(
            cache_hits=1,
            cached_prompt_tokens=hit.prompt_tokens,
            cached_completion_tokens=hit.completion_tokens,
        )
        return JudgeAnswer(
            hit.text, hit.prompt_tokens, hit.completion_tokens, hit.finish_reason, True, attempt, hit.top_logprobs
        )

    def _call(self, key, request, messages, max_tokens, temperature, attempt, stop, top_logprobs) -> JudgeAnswer:
        """Call the backend with transport retries; a success is committed to the cache at once."""
        seed = int(key[:15], 16)  # reproducible sampling on backends that honour a seed
        last = ""
        for retry in range(self.max_retries + 1):
            try:
                with self._slots:
                    ans = self.backend.call(messages, max_tokens, temperature, seed, stop, top_logprobs)
            except PermanentError as exc:
                self._count(call_errors=1)
                self._count_error(str(exc))
                raise JudgeCallError(str(exc)) from None
            except TransientError as exc:
                last = str(exc)
                self._count_error(last)
                if retry == self.max_retries:
                    break
                self._count(transient_retries=1)
                delay = min(self.backoff_max, self.backoff_base * 2**retry)
                with self._lock:
                    wait = delay / 2 + self._rng.uniform(0, delay / 2)
                self._sleep(max(wait, min(exc.retry_after or 0.0, self.backoff_max)))
                continue
            cached = CachedAnswer(ans.text, ans.prompt_tokens, ans.completion_tokens, ans.finish_reason,
                                  ans.top_logprobs)
            self.cache.put(key, self.model_id, request, cached)
            self._count(calls=1, prompt_tokens=ans.prompt_tokens, completion_tokens=ans.completion_tokens)
            return JudgeAnswer(
                ans.text, ans.prompt_tokens, ans.completion_tokens, ans.finish_reason, False, attempt, ans.top_logprobs
            )
        self._count(call_errors=1)
        raise JudgeCallError(f"gave up after {self.max_retries + 1} tries: {last}")

    def complete_parsed(
        self,
        messages: list[dict],
        parse: Callable[[str], Any],
        max_tokens: int,
        attempts: int = 5,
        first_temperature: float = 0.01,
        retry_temperature: float = 0.95,
        stop: Sequence[str] = (),
        force: FormatForcing | None = None,
        force_mode: str = "off",
        expect: Callable[[dict[str, float]], float] | None = None,
    ) -> Parsed:
        """Ask until ``parse`` accepts the answer (it raises :class:`ParseError` otherwise).

        ``force_mode`` (with ``force``): ``"off"`` is the official policy; ``"after_analysis"`` continues
        an unparseable answer with the format cue within the same attempt; ``"direct"`` starts every
        attempt's answer with the cue (no free-text analysis: one short call per attempt);
        ``"expected"`` also starts with the cue but asks for one token with its top-20 log-probabilities
        and returns ``expect(distribution)`` — the judge's expected value (G-Eval style) — instead of
        the single most likely value (``expect`` raises :class:`ParseError` when no admissible value is
        among the top tokens).
        """
        if force_mode not in ("off", "after_analysis", "direct", "expected"):
            raise ValueError(
                f"force_mode must be off, after_analysis, direct or expected (got {force_mode!r})"
            )
        if force_mode != "off" and force is None:
            raise ValueError(f"force_mode={force_mode!r} needs a FormatForcing")
        if force_mode == "expected" and expect is None:
            raise ValueError("force_mode='expected' needs an expect function")
        text, error = "", None
        for attempt in range(attempts):
            temperature = first_temperature if attempt == 0 else retry_temperature
            try:
                if force_mode == "expected":
                    head = force.cue.lstrip("\n")
                    ans = self.complete(
                        [*messages, {"role": "assistant", "content": head}], 1, temperature, attempt, (), 20
                    )
                    self._count(forced_formats=1)
                    dist = (ans.top_logprobs or [{}])[0]
                    shown = ", ".join(f"{t!r}: {math.exp(lp):.3f}" for t, lp in list(dist.items())[:8])
                    text = f"{head}{ans.text}{force.close} (next-token probabilities: {shown})"
                    try:
                        return Parsed(True, expect(dist), text, attempt + 1, None, forced=True)
                    except ParseError as exc:
                        error = str(exc)
                        if attempt + 1 < attempts:
                            self._count(parse_retries=1)
                        continue
                if force_mode == "direct":
                    text = self._forced(messages, "", force, temperature, attempt)
                else:
                    text = self.complete(messages, max_tokens, temperature, attempt, stop).text
                try:
                    return Parsed(True, parse(text), text, attempt + 1, None, forced=force_mode == "direct")
                except ParseError as exc:
                    error = str(exc)
                if force_mode == "after_analysis":
                    text = self._forced(
                        messages, text if force.keep_answer else "", force, temperature, attempt
                    )
                    try:
                        return Parsed(True, parse(text), text, attempt + 1, None, forced=True)
                    except ParseError as exc:
                        error = str(exc)
            except JudgeCallError as exc:
                return Parsed(False, None, text, attempt + 1, f"call failed: {exc}")
            if attempt + 1 < attempts:
                self._count(parse_retries=1)
        self._count(parse_failures=1)
        return Parsed(False, None, text, attempts, f"unparseable after {attempts} attempts: {error}")

    def _forced(
        self, messages: list[dict], answer: str, force: FormatForcing, temperature: float, attempt: int
    ) -> str:
        """Continue ``answer + cue`` as the judge's own reply; returns the text to parse."""
        head = (answer.rstrip() + force.cue) if answer.strip() else force.cue.lstrip("\n")
        cont = self.complete(
            [*messages, {"role": "assistant", "content": head}],
            force.max_tokens,
            temperature,
            attempt,
            [force.close, *force.stop],
        )
        self._count(forced_formats=1)
        return head + cont.text + force.close

    def close(self) -> None:
        close = getattr(self.backend, "close", None)
        if close is not None:
            close()
        self.cache.close()


def make_judge(
    spec: str,
    cache_path: str | None = None,
    *,
    concurrency: int = 4,
    max_retries: int = 5,
    backoff_base: float = 1.0,
    backoff_max: float = 30.0,
    timeout: float = 120.0,
    api_key_env: str = DEFAULT_API_KEY_ENV,
    send_seed: bool = True,
    engine=None,
    engine_kwargs: dict[str, Any] | None = None,
) -> Judge:
    """Build a judge from ``local:<model>`` or ``openai:<base_url>#<model>``.

    ``engine`` lets a caller share an already loaded engine with a ``local:`` judge (for example the
    pipeline, whose policy and judge may be the same model).
    """
    kind, model, url = parse_judge_spec(spec)
    if kind == "local":
        if engine is None:
            from alignkit.generate.engine import make_engine

            engine = make_engine(model, **(engine_kwargs or {}))
        backend = LocalBackend(engine, model_id=model)
    else:
        backend = OpenAIBackend(
            url,
            model,
            api_key_env=api_key_env,
            timeout=timeout,
            send_seed=send_seed,
            max_connections=max(concurrency, 1),
        )
    return Judge(
        backend,
        CallCache(cache_path),
        concurrency=concurrency,
        max_retries=max_retries,
        backoff_base=backoff_base,
        backoff_max=backoff_max,
    )


class JudgeConfig(StrictModel):
    """Which judge answers, and how it is called (one section of the LongReward configs)."""

    spec: str = f"local:{DEFAULT_MODEL}"
    """local:<model> (in-process) or openai:<base_url>#<model> (any OpenAI-compatible server)."""
    cache: str | bool = True
    """Persistent SQLite call cache: true = the command's default file (pipeline: <output_dir>/judge_cache.sqlite;
    judge score: OUTPUT_FILE.judge_cache.sqlite), a path = that file, false = none (a rerun repeats every call)."""
    concurrency: int = Field(default=8, ge=1)
    """Judge calls in flight at once (threads); also how many a local judge can batch together."""
    max_retries: int = Field(default=5, ge=0)
    """Transport retries per call (HTTP 5xx/429/408, timeouts, malformed JSON)."""
    backoff_base: float = Field(default=1.0, ge=0.0)
    backoff_max: float = Field(default=30.0, ge=0.0)
    timeout: float = Field(default=120.0, gt=0.0)
    """Seconds per HTTP request."""
    api_key_env: str = DEFAULT_API_KEY_ENV
    """Environment variable holding the HTTP judge's API key."""
    send_seed: bool = True
    """Send a per-request seed (derived from the cache key) to HTTP judges."""
    dtype: Precision = "auto"
    """Local judge only: weights precision (auto: bf16 where the hardware has native bf16, else fp32; float32/bfloat16:
    old spellings of fp32/bf16)."""
    device: str | None = None
    """Local judge only: cpu | cuda (null: the backend's default)."""
    batch_size: int = Field(default=8, ge=1)
    """Local judge only: sequences decoded together."""


def judge_cache_file(cfg: JudgeConfig, default: str | Path | None) -> str | None:
    """The SQLite file ``cfg.cache`` names (``default`` when it is true); None when caching is off."""
    if cfg.cache is False:
        return None
    if isinstance(default, bool):  # a caller passing `cfg.cache or ...` from before true/false existed
        raise TypeError("judge_cache_file: default is the file `judge.cache: true` means, not a flag")
    if cfg.cache is True:
        if default is None:
            raise ValueError("judge.cache: true needs a default file here; give a path or false")
        return str(default)
    return cfg.cache


def judge_from_config(cfg: JudgeConfig, cache_path: str | Path | None = None, engine=None) -> Judge:
    """Build the judge a :class:`JudgeConfig` describes; ``cache_path`` is the file ``judge.cache: true`` means."""
    engine_kwargs: dict[str, Any] = {"dtype": cfg.dtype, "batch_size": cfg.batch_size}
    if cfg.device is not None:
        engine_kwargs["device"] = cfg.device
    return make_judge(
        cfg.spec,
        judge_cache_file(cfg, cache_path),
        concurrency=cfg.concurrency,
        max_retries=cfg.max_retries,
        backoff_base=cfg.backoff_base,
        backoff_max=cfg.backoff_max,
        timeout=cfg.timeout,
        api_key_env=cfg.api_key_env,
        send_seed=cfg.send_seed,
        engine=engine,
        engine_kwargs=engine_kwargs,
    )
