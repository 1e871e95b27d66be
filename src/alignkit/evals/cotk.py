"""CoTK-style generation metrics, each reported with a comparability hash (METHODS §7).

Semantics follow thu-coai/cotk ``cotk/metric``:

- corpus BLEU: NLTK ``corpus_bleu``, weights ``1/ngram``, ``SmoothingFunction().method3``;
- self-BLEU: hypotheses shuffled with ``random.seed(1229)``, first ``sample=1000`` kept, each
  scored by sentence BLEU (``method1``) against all the *other* kept ones, averaged;
- forward/backward BLEU: the first ``sample`` hypotheses and references, both shuffled with seed
  1229; forward = mean sentence BLEU of each hypothesis against all references, backward = of each
  reference against all hypotheses; ``fw-bw-bleu`` is their harmonic mean;
- distinct-n: hypotheses shuffled with seed 1234, first ``sample=10000``; unique / total n-grams
  with left and right padding (NLTK ``ngrams(pad_left=True, pad_right=True)``);
- perplexity: ``exp(total NLL / total scored tokens)`` from the model's log-probs of each reference
  (conditioned on its context when given; EOS included), via :func:`alignkit.ops.logprobs.response_logps`.

Hash scheme (CoTK ``MetricBase``): an ordered SHA-256 over ``(metric name, version)`` and the
settings that change the number, an order-independent multiset hash over the reference data,
combined as ``sha256(repr((ordered_hex, unordered_hex)))``. Two values are comparable only when
their hashes are equal. Deviation, on purpose: self-BLEU and distinct also hash ``ngram`` and the
tokenizer name (CoTK omits them, yet they change the number).
"""

from __future__ import annotations

import hashlib
import math
import random
import re
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from alignkit.fingerprints import UnorderedSha256, canonical_dumps

Tokenizer = Callable[[str], list[str]]


def _space(text: str) -> list[str]:
    return text.split()


def _regex(text: str) -> list[str]:
    return re.findall(r"\w+|[^\w\s]", text)


TOKENIZERS: dict[str, Tokenizer] = {"space": _space, "regex": _regex}


def get_tokenizer(name: str) -> Tokenizer:
    try:
        return TOKENIZERS[name]
    except KeyError:
        raise ValueError(f"unknown tokenizer {name!r}; choose one of {', '.join(TOKENIZERS)}") from None


def metric_hash(name: str, version: int, settings: Any, unordered_items: Sequence[Any] = ()) -> str:
    """CoTK-style hash: ``sha256(repr((sha256(ordered), unordered_multiset_hash)))``."""
    ordered = hashlib.sha256(canonical_dumps([name, version, settings])).hexdigest()
    unordered = UnorderedSha256()
    for item in unordered_items:
        unordered.update(item)
    return hashlib.sha256(repr((ordered, unordered.hexdigest())).encode()).hexdigest()


def _check_strings(name: str, items: Sequence[Any]) -> None:
    for i, s in enumerate(items):
        if not isinstance(s, str):
            raise TypeError(f"{name}[{i}] must be a str, got {type(s).__name__}")


def _weights(ngram: int) -> tuple[float, ...]:
    if not 1 <= ngram <= 8:
        raise ValueError(f"ngram must be in 1..8, got {ngram}")
    return tuple([1.0 / ngram] * ngram)


def _sentence_bleu(refs: list[list[str]], hyp: list[str], weights: tuple[float, ...]) -> float:
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NLTK warns on n-gram orders with no overlap; method1 handles them
        return float(
            sentence_bleu(refs, hyp, weights=weights, smoothing_function=SmoothingFunction().method1)
        )


def corpus_bleu(
    hypotheses: Sequence[str],
    references: Sequence[str | Sequence[str]],
    ngram: int = 4,
    tokenizer: str = "space",
) -> dict[str, Any]:
    """Corpus BLEU (``method3`` smoothing); each hypothesis has one reference or a list of them."""
    from nltk.translate.bleu_score import SmoothingFunction
    from nltk.translate.bleu_score import corpus_bleu as nltk_corpus_bleu

    _check_strings("hypotheses", hypotheses)
    if len(hypotheses) != len(references) or not hypotheses:
        raise ValueError(
            f"need equally many hypotheses and references (got {len(hypotheses)} and {len(references)})"
        )
    refs = [[r] if isinstance(r, str) else list(r) for r in references]
    for i, rs in enumerate(refs):
        if not rs:
            raise ValueError(f"references[{i}] is empty")
        _check_strings(f"references[{i}]", rs)
    tok = get_tokenizer(tokenizer)
    try:
        value = nltk_corpus_bleu(
            [[tok(r) for r in rs] for rs in refs],
            [tok(h) for h in hypotheses],
            weights=_weights(ngram),
            smoothing_function=SmoothingFunction().method3,
        )
    except ZeroDivisionError:
        raise ValueError(
            "BLEU smoothing divided by zero (NLTK corpus_bleu with a single length-1 sample); add more data"
        ) from None
    h = metric_hash("BleuCorpusMetric", 1, {"ngram": ngram, "tokenizer": tokenizer}, refs)
    return {"bleu": float(value), "bleu hashvalue": h}


def self_bleu(
    hypotheses: Sequence[str], ngram: int = 4, sample: int = 1000, seed: int = 1229, tokenizer: str = "space"
) -> dict[str, Any]:
    """Mean sentence BLEU of each sampled hypothesis against the other sampled hypotheses."""
    _check_strings("hypotheses", hypotheses)
    if len(hypotheses) < 2:
        raise ValueError("self-BLEU needs at least 2 hypotheses")
    if sample <= 1:
        raise ValueError(f"sample must be > 1, got {sample}")
    sample = min(sample, len(hypotheses))
    hyps = list(hypotheses)
    random.Random(seed).shuffle(hyps)  # same permutation as CoTK's random.seed(seed); random.shuffle
    tok = get_tokenizer(tokenizer)
    kept = [tok(h) for h in hyps[:sample]]
    w = _weights(ngram)
    scores = [_sentence_bleu(kept[:i] + kept[i + 1 :], kept[i], w) for i in range(sample)]
    settings = {"seed": seed, "sample": sample, "ngram": ngram, "tokenizer": tokenizer}
    return {
        "self-bleu": sum(scores) / len(scores),
        "self-bleu hashvalue": metric_hash("SelfBleuCorpusMetric", 1, settings),
    }


def fw_bw_bleu(
    hypotheses: Sequence[str],
    references: Sequence[str],
    ngram: int = 4,
    sample: int = 1000,
    seed: int = 1229,
    tokenizer: str = "space",
) -> dict[str, Any]:
    """Forward BLEU (hypotheses vs the reference set), backward BLEU (references vs the hypothesis
    set) and their harmonic mean ``fw-bw-bleu``."""
    _check_strings("hypotheses", hypotheses)
    _check_strings("references", references)
    n_h, n_r = min(sample, len(hypotheses)), min(sample, len(references))
    if n_h <= 1 or n_r <= 1:
        raise ValueError(
            f"forward/backward BLEU needs more than 1 hypothesis and reference (got {n_h}, {n_r})"
        )
    tok = get_tokenizer(tokenizer)
    hyps = [tok(h) for h in hypotheses[:n_h]]
    refs = [tok(r) for r in references[:n_r]]
    rng = random.Random(seed)
    rng.shuffle(hyps)
    rng.shuffle(refs)
    w = _weights(ngram)
    fw = sum(_sentence_bleu(refs, h, w) for h in hyps) / n_h
    bw = sum(_sentence_bleu(hyps, r, w) for r in refs) / n_r
    hm = 2 * fw * bw / (fw + bw) if fw + bw > 0 else 0.0
    h = metric_hash(
        "FwBwBleuCorpusMetric",
        1,
        {"ngram": ngram, "seed": seed, "n_h": n_h, "n_r": n_r, "tokenizer": tokenizer},
        refs,
    )
    return {"fw-bleu": fw, "bw-bleu": bw, "fw-bw-bleu": hm, "fw-bw-bleu hashvalue": h}


def distinct(
    hypotheses: Sequence[str], ngram: int = 3, sample: int = 10000, seed: int = 1234, tokenizer: str = "space"
) -> dict[str, Any]:
    """``#unique n-grams / #n-grams`` over sampled hypotheses, n-grams padded on both sides."""
    from nltk import ngrams

    _check_strings("hypotheses", hypotheses)
    if not hypotheses:
        raise ValueError("distinct needs at least one hypothesis")
    if ngram < 1:
        raise ValueError(f"ngram must be >= 1, got {ngram}")
    sample = min(sample, len(hypotheses))
    hyps = list(hypotheses)
    random.Random(seed).shuffle(hyps)
    tok = get_tokenizer(tokenizer)
    grams = [g for h in hyps[:sample] for g in ngrams(tok(h), ngram, pad_left=True, pad_right=True)]
    if not grams:
        raise ValueError("distinct: every sampled hypothesis is empty")
    value = len(set(grams)) / len(grams)
    settings = {"ngram": ngram, "sample": sample, "seed": seed, "tokenizer": tokenizer}
    return {"distinct": value, "distinct hashvalue": metric_hash("DistinctNgrams", 1, settings)}


def perplexity(
    model: Any,
    tokenizer: Any,
    references: Sequence[str],
    contexts: Sequence[str] | None = None,
    add_eos: bool = True,
    batch_size: int = 8,
) -> dict[str, Any]:
    """``exp(sum of -log p(reference tokens | context) / number of reference tokens)``.

    Tokens are the model tokenizer's; the context (if any) is conditioned on but not scored; the
    EOS token after each reference is scored when ``add_eos``.
    """
    import torch

    from alignkit.ops.logprobs import response_logps

    _check_strings("references", references)
    if not references:
        raise ValueError("perplexity needs at least one reference")
    if contexts is not None:
        _check_strings("contexts", contexts)
        if len(contexts) != len(references):
            raise ValueError(f"got {len(contexts)} contexts for {len(references)} references")
    bos = [tokenizer.bos_token_id] if getattr(tokenizer, "bos_token_id", None) is not None else []
    seqs = []
    for i, ref in enumerate(references):
        ctx = tokenizer(contexts[i], add_special_tokens=False).input_ids if contexts is not None else []
        body = tokenizer(ref, add_special_tokens=False).input_ids + (
            [tokenizer.eos_token_id] if add_eos else []
        )
        prefix = bos + ctx if (bos or ctx) else []
        if not prefix:
            raise ValueError("perplexity without context needs a BOS token to condition the first token on")
        if not body:
            raise ValueError(f"references[{i}] has no tokens")
        seqs.append((prefix, body))
    total_nll, total_tokens = 0.0, 0
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.no_grad():
        for start in range(0, len(seqs), batch_size):
            chunk = seqs[start : start + batch_size]
            width = max(len(p) + len(b) for p, b in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            att = torch.zeros((len(chunk), width), dtype=torch.long)
            lmask = torch.zeros((len(chunk), width), dtype=torch.bool)
            for r, (p, b) in enumerate(chunk):
                ids[r, : len(p) + len(b)] = torch.tensor(p + b)
                att[r, : len(p) + len(b)] = 1
                lmask[r, len(p) : len(p) + len(b)] = True
            dev = next(model.parameters()).device
            out = response_logps(model, ids.to(dev), att.to(dev), lmask.to(dev))
            total_nll -= float(out.logps.sum())
            total_tokens += int(out.counts.sum())
    value = math.exp(total_nll / total_tokens)
    items = [
        {"context": contexts[i] if contexts is not None else None, "reference": r}
        for i, r in enumerate(references)
    ]
    from alignkit.fingerprints import tokenizer_fingerprint

    h = metric_hash(
        "PerplexityMetric", 1, {"add_eos": add_eos, "tokenizer": tokenizer_fingerprint(tokenizer)}, items
    )
    return {"perplexity": value, "perplexity hashvalue": h, "tokens": total_tokens}
