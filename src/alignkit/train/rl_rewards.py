"""Rewards for online RL: the built-in verifiers (``verifiable``, ``ifeval``) or any ``module:function``, an ``alignkit rm``
checkpoint, a judge through the judge layer, or a weighted sum of them.

Every reward function maps a batch of samples to floats, and **NaN means "could not be computed"**
(a judge that failed after its retries, an unparseable answer, a non-finite reward-model output,
a user function returning ``None``). The recipe masks such samples out of the update and counts
them; it never scores them as 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from alignkit.config import import_object
from alignkit.errors import ConfigError
from alignkit.train.rl_rollout import Sample

RewardFn = Callable[[Sequence[dict], Sequence[Sample]], list[float]]


def _clean(value: Any) -> float:
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    return float(value) if math.isfinite(value) else math.nan


IFEVAL_AGGREGATES = ("fraction", "all")
IFEVAL_MODES = ("strict", "loose")


def ifeval_reward(row: dict, text: str, finish_reason: str, aggregate: str = "fraction",
                  mode: str = "strict") -> float:
    """RLVR on instruction following (Tulu 3): the share of the IFEval ``row``'s instructions the response
    follows (``aggregate="fraction"``) or 1.0/0.0 for all of them (``"all"``), judged by
    ``alignkit.evals.ifeval``'s checkers, ``strict`` or ``loose``. A response cut by the token budget
    (``finish_reason != "stop"``) scores 0.0: it is not a finished answer, and many instructions (an end
    phrase, a postscript, a paragraph or section count, two responses) are about how it ends -- paying
    for a cut text would reward running past the budget. A malformed row is a ``DataError``."""
    from alignkit.data.verifiable import follows

    if finish_reason != "stop":
        return 0.0
    verdicts = follows(text, row, loose=mode == "loose")
    if aggregate == "all":
        return 1.0 if all(verdicts) else 0.0
    return sum(verdicts) / len(verdicts)


def verifiable_reward(row: dict, text: str, finish_reason: str) -> float:
    """The built-in verifier: 1.0 when the response finished on its own and follows every instruction of
    the row (an IFEval row of ``alignkit.data.verifiable``, strict), else 0.0 -- ``ifeval:all``."""
    return ifeval_reward(row, text, finish_reason, "all", "strict")


def parse_ifeval_spec(spec: str) -> dict[str, str] | None:
    """``ifeval[:fraction|all][:strict|loose]`` -> ``{"aggregate", "mode"}`` (defaults fraction, strict);
    None when ``spec`` is not an ifeval spec. An unknown option is a ``ConfigError``."""
    name, *options = spec.split(":")
    if name != "ifeval":
        return None
    out = {"aggregate": "fraction", "mode": "strict"}
    for opt in options:
        key = "aggregate" if opt in IFEVAL_AGGREGATES else "mode" if opt in IFEVAL_MODES else None
        if key is None:
            raise ConfigError(f"verifier {spec!r}: unknown option {opt!r}; expected ifeval[:fraction|all]"
                              "[:strict|loose]")
        out[key] = opt
    return out


def verifier_fn(spec: str) -> Callable[[dict, str, str], float]:
    """The ``(row, text, finish_reason) -> number`` function of a verifier spec: ``verifiable`` (every
    instruction, strict), ``ifeval[:fraction|all][:strict|loose]`` or ``package.module:function``."""
    if spec == "verifiable":
        return verifiable_reward
    opts = parse_ifeval_spec(spec)
    if opts is not None:
        return lambda row, text, finish_reason: ifeval_reward(row, text, finish_reason, **opts)
    if ":" not in spec:
        raise ConfigError(f"verifier {spec!r}: expected 'verifiable', 'ifeval[:fraction|all][:strict|loose]' or "
                          "'package.module:function'")
    return import_object(spec, "verifier")


def verifier_reward(spec: str) -> RewardFn:
    """The batch reward of :func:`verifier_fn`'s function; a user function may return ``None``/NaN when
    the reward cannot be computed (masked, never 0)."""
    fn = verifier_fn(spec)
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
