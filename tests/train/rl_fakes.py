"""Rewards and a judge backend for the RL tests (importable as ``tests.train.rl_fakes:<name>``)."""

from __future__ import annotations

import threading

from alignkit.judge.backends import BackendAnswer, PermanentError


def varied(row, text, finish_reason):
    """A deterministic reward that differs between samples (the tiny random model never passes a verifier)."""
    return (len(text) % 7) / 6.0


def flaky(row, text, finish_reason):
    """No reward (None) for responses whose length is a multiple of 3."""
    return None if len(text) % 3 == 0 else 1.0


class ParityJudge:
    """Rates an answer of even length [[7]]; refuses an odd-length one (a permanent failure, not retried)."""

    kind = "fake"
    model_id = "parity"
    context_window = 8192
    tokenizer = None

    def __init__(self):
        self.calls = 0
        self._lock = threading.Lock()

    def call(self, messages, max_tokens, temperature, seed, stop=(), top_logprobs=0):
        with self._lock:
            self.calls += 1
        prompt = messages[-1]["content"]
        answer = prompt.rsplit("[Response]\n", 1)[1].rsplit("\n[Analysis]", 1)[0]
        if len(answer) % 2:
            raise PermanentError("HTTP 400: scripted refusal")
        return BackendAnswer("Fine.\n[Rating]\n[[7]]", 10, 5, "stop")
