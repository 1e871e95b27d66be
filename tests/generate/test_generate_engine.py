"""The generation engine: greedy equality with model.generate, batching, seeds, stops, sampling maths."""

from __future__ import annotations

import pytest
import torch

from alignkit.generate.engine import (
    Completion,
    GenerationError,
    HFEngine,
    SamplingParams,
    _Row,
    make_engine,
)

PROMPTS = [
    "Hi",
    "Tell me a long story about a dragon who lived in a mountain and collected books.",
    "2+2=?",
    "Name the planets of the solar system in order, please, with one fact each.",
    "Why?",
]


def _reference_greedy(model, ids: list[int], max_new_tokens: int) -> list[int]:
    out = model.generate(
        torch.tensor([ids]),
        attention_mask=torch.ones(1, len(ids), dtype=torch.long),
        do_sample=False,
        max_new_tokens=max_new_tokens,
    )
    return out[0, len(ids) :].tolist()


@pytest.fixture()
def engine(tiny_lm):
    model, tok = tiny_lm
    return HFEngine(model, tok, batch_size=3)


def test_greedy_matches_model_generate_single_prompt(engine):
    for prompt in PROMPTS[:3]:
        res = engine.generate([prompt], SamplingParams(max_new_tokens=12))[0]
        ref = _reference_greedy(engine.model, engine.encode(prompt), 12)
        assert res.completions[0].token_ids == ref


def test_batched_greedy_equals_one_at_a_time_and_keeps_input_order(engine):
    params = SamplingParams(max_new_tokens=10)
    batched = engine.generate(PROMPTS, params)
    single = [engine.generate([p], params)[0] for p in PROMPTS]
    assert [r.prompt for r in batched] == [engine.render(p) for p in PROMPTS]
    for p, b, s in zip(PROMPTS, batched, single, strict=True):
        assert b.completions[0].token_ids == s.completions[0].token_ids
        assert b.prompt_tokens == len(engine.encode(p))
    # padding really happened: the prompts differ in length
    assert len({r.prompt_tokens for r in batched}) > 1


def test_prompt_forms_render_as_documented(engine):
    tok = engine.tokenizer
    as_str = engine.render("hello")
    as_msgs = engine.render([{"role": "user", "content": "hello"}])
    assert (
        as_str
        == as_msgs
        == tok.apply_chat_template(
            [{"role": "user", "content": "hello"}], tokenize=False, add_generation_prompt=True
        )
    )
    assert engine.render("hello", apply_chat_template=False) == "hello"
    # messages are chat-rendered even when apply_chat_template=False
    assert engine.render([{"role": "user", "content": "hello"}], apply_chat_template=False) == as_msgs
    raw = engine.generate(["hello"], SamplingParams(max_new_tokens=3), apply_chat_template=False)[0]
    assert raw.prompt == "hello" and raw.prompt_tokens == len(tok("hello").input_ids)


def test_seeded_samples_do_not_depend_on_the_batch(tiny_lm):
    model, tok = tiny_lm
    # A random init gives a near-uniform next-token distribution (tiny tokenizer: p ~ 2e-3 each), where
    # padding-dependent float rounding (~1e-7) can move inverse-CDF draws to a neighbouring token on some
    # CPUs. Sharpen the logits (top p ~ 0.09, samples still distinct) so the test checks seeding and
    # batching, not rounding.
    with torch.no_grad():
        model.lm_head.weight.mul_(6.0)
    params = SamplingParams(max_new_tokens=8, temperature=1.0, n=3, seed=123)
    alone = HFEngine(model, tok, batch_size=3).generate([PROMPTS[1]], params)[0]
    crowd = HFEngine(model, tok, batch_size=8).generate(PROMPTS, params)[1]
    assert [c.token_ids for c in alone.completions] == [c.token_ids for c in crowd.completions]
    # the n completions of one request are different samples, and another seed gives other samples
    assert len({tuple(c.token_ids) for c in alone.completions}) == 3
    other = HFEngine(model, tok).generate(
        [PROMPTS[1]], SamplingParams(max_new_tokens=8, temperature=1.0, n=3, seed=7)
    )
    assert [c.token_ids for c in other[0].completions] != [c.token_ids for c in alone.completions]


def test_unseeded_sampling_follows_torch_manual_seed(engine):
    params = SamplingParams(max_new_tokens=6, temperature=1.0, n=2)
    torch.manual_seed(0)
    a = engine.generate(PROMPTS[:2], params)
    torch.manual_seed(0)
    b = engine.generate(PROMPTS[:2], params)
    assert [[c.token_ids for c in r.completions] for r in a] == [
        [c.token_ids for c in r.completions] for r in b
    ]


def test_stop_string_cuts_before_it(engine):
    free = engine.generate([PROMPTS[0]], SamplingParams(max_new_tokens=20))[0].completions[0]
    assert free.finish_reason == "length" and len(free.text) > 10
    stop = free.text[6:9]
    cut = engine.generate([PROMPTS[0]], SamplingParams(max_new_tokens=20, stop=["\x00never", stop]))[
        0
    ].completions[0]
    assert cut.finish_reason == "stop"
    assert cut.text == free.text[: free.text.index(stop)]
    assert stop not in cut.text
    # generation stopped early: the tokens end as soon as the stop string is complete
    assert len(cut.token_ids) < len(free.token_ids)
    assert free.token_ids[: len(cut.token_ids)] == cut.token_ids


def test_stop_token_ids_and_min_new_tokens(engine):
    free = engine.generate([PROMPTS[2]], SamplingParams(max_new_tokens=10))[0].completions[0]
    stop_tok = free.token_ids[3]
    first = free.token_ids.index(stop_tok)
    stopped = engine.generate([PROMPTS[2]], SamplingParams(max_new_tokens=10, stop_token_ids=[stop_tok]))[0]
    c = stopped.completions[0]
    assert c.finish_reason == "stop" and c.token_ids == free.token_ids[: first + 1]
    # min_new_tokens forbids the stop token (and EOS) for the first steps
    blocked = free.token_ids[0]
    c2 = engine.generate(
        [PROMPTS[2]], SamplingParams(max_new_tokens=10, stop_token_ids=[blocked], min_new_tokens=4)
    )[0].completions[0]
    assert blocked not in c2.token_ids[:4] and len(c2.token_ids) >= 4


@pytest.fixture(scope="module")
def embedded_engine(embedded_path):
    """fp32 whatever the CPU: the greedy-equality test is an exact invariant (``auto`` is bf16 on AMX CPUs)."""
    return HFEngine.from_pretrained(embedded_path, dtype="float32", batch_size=4)


@pytest.mark.slow
def test_eos_ends_generation_with_stop_reason(embedded_engine):
    res = embedded_engine.generate(
        ["What is the capital of France? Answer in one word."], SamplingParams(max_new_tokens=40)
    )
    c = res[0].completions[0]
    assert c.finish_reason == "stop"
    assert c.token_ids[-1] == embedded_engine.tokenizer.eos_token_id
    assert "<|im_end|>" not in c.text and "Paris" in c.text


@pytest.mark.slow
def test_greedy_matches_model_generate_on_embedded_model(embedded_engine):
    prompts = ["Write one sentence about rivers.", [{"role": "user", "content": "Count from 1 to 5."}]]
    res = embedded_engine.generate(prompts, SamplingParams(max_new_tokens=24))
    for p, r in zip(prompts, res, strict=True):
        ref = _reference_greedy(embedded_engine.model, embedded_engine.encode(p), 24)
        assert r.completions[0].token_ids == ref


@pytest.mark.slow
@pytest.mark.precision_sensitive
def test_greedy_in_bf16_agrees_with_model_generate_up_to_bf16_ties(embedded_path):
    """In bf16 the engine's batched, padded forward rounds differently from ``model.generate`` on one
    unpadded row, so greedy paths may part at a near-tie. Where they part, the two tokens' logits (bf16
    outputs, one ulp = 2^-8 of their magnitude relative) must be within 4 ulps of the largest logit;
    before that point they agree token for token."""
    engine = HFEngine.from_pretrained(embedded_path, dtype="bfloat16", batch_size=4)
    assert engine.model.dtype == torch.bfloat16
    prompts = ["Write one sentence about rivers.", [{"role": "user", "content": "Count from 1 to 5."}]]
    res = engine.generate(prompts, SamplingParams(max_new_tokens=16))
    for p, r in zip(prompts, res, strict=True):
        ids = engine.encode(p)
        ref = _reference_greedy(engine.model, ids, 16)
        ours = r.completions[0].token_ids
        t = next((i for i, (a, b) in enumerate(zip(ours, ref, strict=False)) if a != b), None)
        if t is None:
            assert ours == ref[: len(ours)]
            continue
        with torch.no_grad():
            logits = engine.model(torch.tensor([ids + ref[:t]])).logits[0, -1].float()
        margin = (logits[ref[t]] - logits[ours[t]]).abs().item()
        assert margin <= 4 * 2**-8 * logits.abs().max().item(), (t, margin)


def test_prompt_longer_than_context_is_refused(engine):
    long = "word " * 3000  # tiny model context: 2048 positions
    with pytest.raises(GenerationError, match="prompt 1: .* exceed the model's context window of 2048"):
        engine.generate(["ok", long], SamplingParams(max_new_tokens=4))


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"n": 0}, "n"),
        ({"temperature": -1}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"max_new_tokens": 0}, "max_new"),
    ],
)
def test_invalid_params_are_refused(engine, kwargs, field):
    with pytest.raises(GenerationError, match=field):
        engine.generate(["x"], SamplingParams(**kwargs))


def test_sampler_respects_top_p_top_k_and_probabilities(engine):
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))

    def draws(params, k=3000):
        gen = torch.Generator().manual_seed(0)
        rows = [_Row(0, 0, gen)]
        return torch.stack([engine._sample(logits.clone(), rows, params)[0] for _ in range(k)]).flatten()

    plain = torch.bincount(draws(SamplingParams(temperature=1.0)), minlength=4).float() / 3000
    assert torch.allclose(plain, torch.tensor([0.5, 0.3, 0.15, 0.05]), atol=0.03)
    # nucleus 0.75: {0.5, 0.3} reaches it, so the tail never appears and 0/1 keep their ratio
    nucleus = torch.bincount(draws(SamplingParams(temperature=1.0, top_p=0.75)), minlength=4).float() / 3000
    assert nucleus[2:].sum() == 0 and abs(nucleus[0] - 0.625) < 0.03
    topk = torch.bincount(draws(SamplingParams(temperature=1.0, top_k=1)), minlength=4)
    assert topk[0] == 3000
    # low temperature concentrates the mass on the argmax
    cold = torch.bincount(draws(SamplingParams(temperature=0.1)), minlength=4).float() / 3000
    assert cold[0] > 0.98


def _nucleus_by_full_sort(probs, top_p):
    sorted_p, sorted_idx = probs.sort(dim=-1, descending=True)
    drop = (sorted_p.cumsum(-1) - sorted_p) >= top_p
    return torch.zeros_like(probs).scatter(-1, sorted_idx, sorted_p.masked_fill(drop, 0.0))


@pytest.mark.parametrize("top_p", [0.5, 0.9, 0.95, 0.999])
def test_nucleus_from_top_k_equals_the_full_sort(top_p):
    from alignkit.generate.engine import candidates

    gen = torch.Generator().manual_seed(0)
    peaked = torch.randn(6, 5000, generator=gen) * 4  # nucleus within the first 64 candidates
    flat = torch.randn(3, 5000, generator=gen) * 0.05  # nucleus of thousands: needs the retries
    logits = torch.cat([peaked, flat])
    probs, ids = candidates(logits, top_p=top_p, first_k=64)
    dense = torch.zeros_like(logits).scatter(-1, ids, probs)
    reference = _nucleus_by_full_sort(torch.softmax(logits, dim=-1), top_p)
    # the same kept set, up to one boundary token whose mass-before sits within float rounding of top_p
    assert int(((dense > 0) != (reference > 0)).sum(-1).max()) <= 1
    assert torch.allclose(dense.sum(-1), reference.sum(-1), atol=1e-5)
    both = (dense > 0) & (reference > 0)
    assert torch.allclose(dense[both], reference[both], rtol=1e-5, atol=1e-9)
    assert ids.shape[-1] > 64  # the flat rows needed the retry


def test_top_k_then_top_p_renormalises_over_the_top_k():
    from alignkit.generate.engine import candidates

    logits = torch.log(torch.tensor([[0.4, 0.3, 0.2, 0.1]]))
    probs, ids = candidates(logits, top_k=2, top_p=1.0)
    assert ids.tolist() == [[0, 1]] and torch.allclose(probs, torch.tensor([[4 / 7, 3 / 7]]))
    # top-k 3 -> {0.444, 0.333, 0.222}; nucleus 0.7 keeps the first two (0.444 < 0.7 <= 0.777)
    probs, ids = candidates(logits, top_k=3, top_p=0.7)
    assert ids.tolist() == [[0, 1, 2]] and probs[0, 2] == 0 and probs[0, 1] > 0


def test_n_completions_share_one_prefill(engine, monkeypatch):
    calls = []
    forward = engine.model.forward

    def counting(*a, **kw):
        calls.append(kw["input_ids"].shape)
        return forward(*a, **kw)

    monkeypatch.setattr(engine.model, "forward", counting)
    res = engine.generate(["abc"], SamplingParams(max_new_tokens=3, temperature=1.0, n=3, seed=1))
    assert len(res[0].completions) == 3 and all(isinstance(c, Completion) for c in res[0].completions)
    assert calls[0][0] == 1  # one prefill row for three completions
    assert calls[1][0] == 3  # then three decode rows


def test_progress_bar_runs(engine, capsys):
    res = engine.generate(PROMPTS[:2], SamplingParams(max_new_tokens=3, n=2), progress=True)
    assert len(res) == 2


def test_vllm_request_is_refused_without_vllm_or_gpu():
    with pytest.raises(GenerationError, match="backend 'vllm' was requested but cannot be used"):
        make_engine("smollm2-135m-instruct", backend="vllm")
    with pytest.raises(GenerationError, match="vLLM runs on CUDA GPUs only|not installed"):
        make_engine("smollm2-135m-instruct", backend="vllm", device="cpu")
    with pytest.raises(GenerationError, match="unknown generation backend"):
        make_engine("smollm2-135m-instruct", backend="tgi")


def test_auto_backend_uses_hf_on_cpu(tiny_model_dir):
    eng = make_engine(tiny_model_dir, backend="auto", batch_size=2)
    assert isinstance(eng, HFEngine) and eng.batch_size == 2


def test_per_prompt_seeds_override_params_seed(engine):
    params = SamplingParams(max_new_tokens=6, temperature=1.0)
    both = engine.generate(PROMPTS[:2], params, seeds=[5, 9])
    a = engine.generate([PROMPTS[0]], SamplingParams(max_new_tokens=6, temperature=1.0, seed=5))[0]
    b = engine.generate([PROMPTS[1]], SamplingParams(max_new_tokens=6, temperature=1.0, seed=9))[0]
    assert both[0].completions[0].token_ids == a.completions[0].token_ids
    assert both[1].completions[0].token_ids == b.completions[0].token_ids
    with pytest.raises(GenerationError, match="seeds: expected 2"):
        engine.generate(PROMPTS[:2], params, seeds=[1])


def test_final_assistant_message_is_continued(engine):
    msgs = [{"role": "user", "content": "Rate it."}, {"role": "assistant", "content": "Rating: [["}]
    text = engine.render(msgs)
    assert text.endswith("<|im_start|>assistant\nRating: [[")  # no end of turn, no new assistant turn
    res = engine.generate([msgs], SamplingParams(max_new_tokens=3))[0]
    assert res.prompt == text and res.prompt_tokens == len(engine.encode(msgs))
    with pytest.raises(GenerationError, match="at least one message"):
        engine.render([])


def test_logprobs_are_the_models_top_tokens(engine):
    res = engine.generate(["Hi"], SamplingParams(max_new_tokens=4, logprobs=5))[0].completions[0]
    assert res.logprobs is not None and len(res.logprobs) == len(res.token_ids)
    ids = engine.encode("Hi")
    with torch.no_grad():
        logits = engine.model(torch.tensor([ids])).logits[0, -1]
    ref = torch.log_softmax(logits.float(), -1).topk(5)
    first = res.logprobs[0]
    assert list(first) == ref.indices.tolist()
    assert list(first.values()) == pytest.approx(ref.values.tolist(), abs=1e-4)
    for step, tok in zip(res.logprobs, res.token_ids, strict=True):  # greedy picks the top entry
        assert max(step, key=step.get) == tok
    assert engine.generate(["Hi"], SamplingParams(max_new_tokens=2))[0].completions[0].logprobs is None


SHARED = ("You are a careful grader. Read the question and the answer, then rate the answer from 1 to 10 "
          "for helpfulness, logic and faithfulness; explain your reasoning step by step before the rating. ")


@pytest.mark.parametrize("n", [1, 2])
def test_greedy_with_prefix_reuse_equals_without(tiny_lm, n):
    """Prompts sharing a long prefix (judge prompts for one question): prefix prefilled once, same tokens."""
    model, tok = tiny_lm
    prompts = [SHARED + q for q in ("Answer: 4.", "Answer: five, I think, or maybe 4.", "Answer: no idea")]
    prompts += ["Why?"]  # shares only the chat header: batched apart, no prefix reuse
    params = SamplingParams(max_new_tokens=10, n=n, temperature=0.0)
    plain = HFEngine(model, tok, batch_size=8, min_shared_prefix=0).generate(prompts, params)
    reuse = HFEngine(model, tok, batch_size=8, min_shared_prefix=32)
    shapes = []
    hook = model.register_forward_pre_hook(lambda _m, _a, kw: shapes.append(tuple(kw["input_ids"].shape)),
                                           with_kwargs=True)
    try:
        got = reuse.generate(prompts, params)
    finally:
        hook.remove()
    for a, b in zip(plain, got, strict=True):
        assert [c.token_ids for c in a.completions] == [c.token_ids for c in b.completions]
    common = len(__import__("os").path.commonprefix([reuse.encode(p) for p in prompts[:3]]))
    assert common >= 32 and (1, common) in shapes  # the shared prefix was run once, as one row
    assert (1, len(reuse.encode("Why?"))) in shapes  # the unrelated prompt in a batch of its own


def test_on_token_reports_every_token_right_after_its_decode_step(engine):
    """``on_token`` sees each completion's tokens in order, as decoded: each token is reported between
    the forward pass that produced it and the next one, not when the call returns."""
    forwards = []
    hook = engine.model.register_forward_pre_hook(lambda *_: forwards.append(1))
    seen: dict[tuple[int, int], list[tuple[int, int]]] = {}
    try:
        params = SamplingParams(max_new_tokens=5, temperature=0.9, n=2, seed=4, stop=["e"])
        prompts = ["Hi", "Why?"]
        got = engine.generate(prompts, params,
                              on_token=lambda r, j, tok: seen.setdefault((r, j), []).append((tok, len(forwards))))
    finally:
        hook.remove()
    assert engine.generate(prompts, params) == got  # listening changes nothing
    assert sorted(seen) == [(r, j) for r in range(2) for j in range(2)]
    for (r, j), toks in seen.items():
        assert [t for t, _ in toks] == got[r].completions[j].token_ids  # stop and EOS tokens included
        steps = [f for _, f in toks]  # forward passes so far: one more per reported token
        assert steps == list(range(steps[0], steps[0] + len(steps))) and steps[0] >= 1
