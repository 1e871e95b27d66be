"""Rewards for online RL: the built-in verifier (or any ``module:function``), an ``alignkit rm``
checkpoint, a judge through the judge layer, or a weighted sum of them.

Every reward function maps a batch of samples to floats, and **NaN means "could not be computed"**
(a judge that failed after its retries, an unparseable answer, a non-finite reward-model output,
a user function returning ``None``). The recipe masks such samples out of the update and counts
them; it never scores them as 0.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from alignkit.errors import ConfigError
from alignkit.train.rl_rollout import Sample

RewardFn = Callable[[Sequence[dict], Sequence[Sample]], list[float]]


def _clean(value: Any) -> float:
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    return float(value) if math.isfinite(value) else math.nan


def verifiable_reward(row: dict, text: str, finish_reason: str) -> float:
    """The built-in verifier: 1.0 when the response finished on its own and satisfies the row's
    ``constraint`` (``alignkit.data.verifiable``), else 0.0. A truncated response never passes."""
    from alignkit.pipelines.verifiable_prefs import sample_passes

    return 1.0 if sample_passes(text, finish_reason, row["constraint"]) else 0.0


def verifier_reward(spec: str) -> RewardFn:
    """``"verifiable"`` (built in) or ``"package.module:function"`` taking ``(row, text, finish_reason)``
    and returning a number, or ``None``/NaN when the reward cannot be computed."""
    if spec == "verifiable":
        fn = verifiable_reward
    else:
        module, _, name = spec.partition(":")
        if not module or not name:
            raise ConfigError(f"reward.verifier={spec!r}: expected 'verifiable' or 'package.module:function'")
        try:
            fn = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"reward.verifier={spec!r}: cannot import it ({exc})") from None
    return lambda rows, samples: [_clean(fn(r, s.text, s.finish_reason)) for r, s in zip(rows, samples, strict=True)]


def model_reward(path: str, device, batch_size: int = 8) -> RewardFn:
    """Scalar score of an ``alignkit rm`` checkpoint on (prompt, response), rendered with the reward
    model's own tokenizer and chat template exactly as ``alignkit rm`` trained it."""
    from alignkit.data.batching import collate
    from alignkit.data.tokenize import ChatTokenizer, TokenizedExample
    from alignkit.models import load_reward_model, load_tokenizer
    from alignkit.train.run import RewardForward

    tok = load_tokenizer(path)
    fwd = RewardForward(load_reward_model(path).to(device)).eval()
    ct = ChatTokenizer(tok)

    @torch.no_grad()
    def score(rows: Sequence[dict], samples: Sequence[Sample]) -> list[float]:
        exs = []
        for r, s in zip(rows, samples, strict=True):
            # a string prompt is one user message, as the generation engine renders it
            prompt = r["prompt"] if isinstance(r["prompt"], list) else [{"role": "user", "content": r["prompt"]}]
            completion = [{"role": "assistant", "content": s.text}]
            exs.append(TokenizedExample(0, ct.prompt_ids(prompt, True), [ct.completion_ids(prompt, completion, True)]))
        out: list[float] = []
        for i in range(0, len(exs), batch_size):
            b = collate(exs[i : i + batch_size], tok.pad_token_id)
            out += fwd(b["input_ids"].to(device), b["attention_mask"].to(device)).cpu().tolist()
        return [_clean(x) for x in out]

    return score


def judge_reward(judge, max_tokens: int = 256, scale: float = 10.0) -> RewardFn:
    """A judge's 0-10 rating (prompt ``judge/prompts/rl_reward.en.txt``, ``[[k]]`` parsed as in
    LongReward) divided by ``scale``; calls are cached and retried by the judge layer, and a rating
    that cannot be obtained is NaN."""
    from alignkit.data.rows import text_of
    from alignkit.judge.longreward import parse_score
    from alignkit.judge.prompts import fill, load_prompt

    template = load_prompt("rl_reward", "en")

    def one(row: dict, sample: Sample) -> float:
        question = text_of([m for m in row["prompt"] if m["role"] == "user"][-1:]) if isinstance(
            row["prompt"], list) else row["prompt"]
        messages = [{"role": "user", "content": fill(template, question=question, answer=sample.text)}]
        outcome = judge.complete_parsed(messages, parse_score, max_tokens=max_tokens)
        return outcome.value / scale if outcome.ok else math.nan

    def score(rows: Sequence[dict], samples: Sequence[Sample]) -> list[float]:
        with ThreadPoolExecutor(max_workers=max(1, judge.concurrency)) as pool:
            return list(pool.map(one, rows, samples))

    return score


def remote_reward(url: str, api_key: str | None = None) -> RewardFn:
    """Scores from an ``alignkit serve --reward-model`` server (``generate.reward_server.score_remote``,
    retried there). A row the server could not score, or a whole batch the server never answered, is NaN:
    masked and counted like any failed reward, never 0."""
    from alignkit.generate.reward_server import RemoteScoreError, score_remote

    def score(rows: Sequence[dict], samples: Sequence[Sample]) -> list[float]:
        payload = [{"prompt": r["prompt"], "completion": s.text} for r, s in zip(rows, samples, strict=True)]
        try:
            return [_clean(v) for v in score_remote(url, payload, api_key=api_key)]
        except RemoteScoreError:
            return [math.nan] * len(payload)

    return score


def weighted_sum(parts: dict[str, RewardFn], weights: dict[str, float]) -> RewardFn:
    """``sum_k w_k r_k``; NaN when any component is NaN (a partial reward is not a reward)."""

    def score(rows: Sequence[dict], samples: Sequence[Sample]) -> list[float]:
        totals = [0.0] * len(samples)
        for name, fn in parts.items():
            for i, v in enumerate(fn(rows, samples)):
                totals[i] += weights[name] * v
        return totals

    return score
