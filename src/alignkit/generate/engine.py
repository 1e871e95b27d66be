"""The shared generation engine: batched, KV-cached sampling for eval, judging, sampling and RL.

``HFEngine`` runs its own decode loop over a Hugging Face causal LM instead of ``model.generate``:

* prompts are tokenised once, sorted by length and packed into left-padded batches (a row budget
  ``batch_size`` plus a token budget ``max_batch_tokens`` for the prefill), so similar lengths share
  a batch and little compute is spent on padding; results come back in input order;
* a prompt asked for ``n`` completions is prefilled **once** and its KV cache repeated ``n`` times
  (for K-way sampling of long prompts the prefill dominates, so this divides its cost by ``n``);
* prompts that share a long prefix (at least ``min_shared_prefix`` tokens: LongReward's judge prompts
  for one question share the instructions and the question) are batched together and the prefix is
  prefilled once for the batch; only the suffixes are computed per row (greedy output unchanged, tested);
* only the last position's logits are computed (``logits_to_keep=1``): a 3k-token prompt would
  otherwise materialise 3k x vocab floats per row;
* finished rows are dropped from the batch and the cache at once, so a long straggler does not keep
  paying for the rows that stopped early;
* every completion owns a ``torch.Generator`` seeded from (request seed, completion index) and draws
  exactly one uniform per step (inverse-CDF sampling), so a seeded sample does not depend on which
  other prompts share its batch;
* with ``SamplingParams.sampled_logprobs`` each token also carries its log-probability under the
  distribution it was drawn from (after temperature, top-k and top-p: the behaviour policy of online RL's
  importance-sampling correction; vLLM: ``logprobs_mode="processed_logprobs"``).

Greedy decoding (``temperature=0``) is plain argmax and matches ``model.generate(do_sample=False)``
token for token on a single prompt (tested).

``make_engine`` picks the backend: ``"hf"`` (this file), ``"vllm"`` (needs the ``vllm`` package and a
CUDA GPU; refused with a clear error otherwise, never silently replaced) or ``"auto"`` (vLLM only when
both are present). A vLLM engine built with ``weight_sync=True`` takes a trainer's current weights
(:meth:`VLLMEngine.load_weights`), which online RL uses between updates.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from alignkit.data.toolcalls import Conversation, render_chat

Prompt = str | list[dict] | Conversation
TokenCallback = Callable[[int, int, int], None]
"""``on_token(request index, completion index, token id)``: called for every generated token, in order."""


class Engine(Protocol):
    """What every generation backend offers (:class:`HFEngine`, :class:`VLLMEngine`).

    Build one with :func:`make_engine` (the one place engines are constructed); code that generates,
    judges or evaluates takes an ``Engine`` and never asks which backend it is.
    """

    name: str

    @property
    def max_context(self) -> int: ...

    def render(self, prompt: Prompt, apply_chat_template: bool = True) -> str: ...

    def encode(self, prompt: Prompt, apply_chat_template: bool = True) -> list[int]: ...

    def count_tokens(self, text: str) -> int: ...

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams, *, apply_chat_template: bool = True,
                 progress: bool = False, seeds: Sequence[int | None] | None = None,
                 on_token: TokenCallback | None = None) -> list[GenerationResult]:
        """``params.n`` completions per prompt, in input order. ``on_token`` (optional) is called with
        (request index, completion index, token id) for every generated token, terminating EOS/stop token
        included, in generation order per completion; when it is called (during decoding or at the end)
        is the backend's to say."""
        ...


class GenerationError(ValueError):
    """A generation request that cannot be honoured (bad parameters, prompt too long, missing backend)."""


@dataclass
class SamplingParams:
    """Decoding parameters shared by every backend (names follow vLLM / the OpenAI API)."""

    max_new_tokens: int = 256
    temperature: float = 0.0  # 0.0 means greedy (argmax); >0 samples
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    n: int = 1  # completions per prompt
    stop: list[str] = field(default_factory=list)  # output is cut before the first stop string
    stop_token_ids: list[int] = field(default_factory=list)  # in addition to the tokenizer's EOS
    min_new_tokens: int = 0
    seed: int | None = None  # per-request seed: same prompt+seed -> same sample whatever the batch
    logprobs: int = 0  # return this many top log-probabilities per generated token (0 = none, max 20)
    sampled_logprobs: bool = False
    """Also return, per generated token, its log-probability under the distribution it was *drawn from*
    (``Completion.sampled_logprobs``): the model's logits with the EOS ban of ``min_new_tokens``, divided by
    the temperature, restricted to the top-k / top-p candidates and renormalised over them. This is the
    behaviour policy mu of importance sampling (vLLM's ``logprobs_mode="processed_logprobs"``); needs
    temperature > 0 (greedy decoding draws from no distribution)."""

    def validate(self) -> None:
        """Raise :class:`GenerationError` naming the first invalid field."""
        if self.max_new_tokens < 1:
            raise GenerationError(f"max_new_tokens must be >= 1 (got {self.max_new_tokens})")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise GenerationError(
                f"min_new_tokens must be in [0, max_new_tokens={self.max_new_tokens}] (got {self.min_new_tokens})"
            )
        if self.temperature < 0:
            raise GenerationError(f"temperature must be >= 0 (got {self.temperature})")
        if not 0 < self.top_p <= 1:
            raise GenerationError(f"top_p must be in (0, 1] (got {self.top_p})")
        if self.top_k < 0:
            raise GenerationError(f"top_k must be >= 0, 0 = off (got {self.top_k})")
        if not 0 <= self.logprobs <= 20:
            raise GenerationError(f"logprobs must be in [0, 20] (got {self.logprobs})")
        if self.n < 1:
            raise GenerationError(f"n must be >= 1 (got {self.n})")
        if self.sampled_logprobs and self.temperature == 0:
            raise GenerationError("sampled_logprobs needs temperature > 0: greedy decoding samples from no distribution")
        if any(not isinstance(s, str) or s == "" for s in self.stop):
            raise GenerationError(f"stop strings must be non-empty strings (got {self.stop!r})")


@dataclass
class Completion:
    """One sampled continuation.

    ``token_ids`` are the tokens the model produced, including the terminating EOS / stop token (as
    vLLM reports them); ``text`` is their decoding without special tokens, cut before a stop string.
    """

    text: str
    token_ids: list[int]
    finish_reason: str  # "stop" (EOS/stop string/stop token) or "length"
    logprobs: list[dict[int, float]] | None = None
    """With ``SamplingParams.logprobs = k``: per generated token, the k most likely token ids (plus the
    generated one when it is not among them) and their log-probabilities under the model's
    distribution (log-softmax of the logits, before temperature, top-k and top-p)."""
    sampled_logprobs: list[float] | None = None
    """With ``SamplingParams.sampled_logprobs``: per generated token (``len(token_ids)`` values), its
    log-probability under the processed distribution it was sampled from (see that field)."""


@dataclass
class GenerationResult:
    prompt: str  # the exact rendered prompt text fed to the model
    prompt_tokens: int
    completions: list[Completion]  # len == params.n


def completion_seed(seed: int, index: int) -> int:
    """Seed of completion ``index`` of a request seeded with ``seed`` (stable across runs and backends)."""
    digest = hashlib.sha256(f"alignkit:{seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def render_prompt(tokenizer: Any, prompt: Prompt, apply_chat_template: bool = True) -> str:
    """Prompt semantics shared by all backends.

    A ``str`` with ``apply_chat_template`` is one user message rendered with the chat template and the
    generation prompt; a message list (or a :class:`~alignkit.data.toolcalls.Conversation`: messages
    with the tools they may call) is always chat-rendered by :func:`~alignkit.data.toolcalls.render_chat`,
    the renderer training uses; a ``str`` without it is fed raw. A message list ending with an
    ``assistant`` message is rendered without a new turn, so the model continues that message (an answer
    prefix, like ``continue_final_message`` in transformers/vLLM).
    """
    if isinstance(prompt, str) and not apply_chat_template:
        return prompt
    tools = None
    if isinstance(prompt, Conversation):
        prompt, tools = prompt.messages, prompt.tools
    if isinstance(prompt, str):
        messages = [{"role": "user", "content": prompt}]
    elif isinstance(prompt, list) and all(
        isinstance(m, dict) and "role" in m and "content" in m for m in prompt
    ):
        messages = prompt
    else:
        raise GenerationError(
            f"a prompt must be a string or a list of {{role, content}} messages, got {prompt!r:.80}"
        )
    if not messages:
        raise GenerationError("a prompt must hold at least one message")
    if not getattr(tokenizer, "chat_template", None):
        raise GenerationError(
            "the tokenizer has no chat template; pass raw strings with apply_chat_template=False"
        )
    # a final assistant message is a prefix of the reply: the model continues it (no new turn)
    final = messages[-1]["role"] == "assistant"
    return render_chat(tokenizer, messages, tools, add_generation_prompt=not final, continue_final_message=final)


def encode_prompt(tokenizer: Any, prompt: Prompt, apply_chat_template: bool) -> tuple[str, list[int]]:
    """The rendered prompt (:func:`render_prompt`) and the token ids every backend feeds the model."""
    text = render_prompt(tokenizer, prompt, apply_chat_template)
    # A rendered chat template already holds its special tokens (BOS included when the model wants one).
    chat = not (isinstance(prompt, str) and not apply_chat_template)
    ids = tokenizer(text, add_special_tokens=not chat).input_ids
    if not ids:
        raise GenerationError("empty prompt: at least one token is needed to condition on")
    return text, ids


def cut_at_stop(text: str, stops: Sequence[str], search_from: int = 0) -> int | None:
    """Index of the earliest stop string occurrence starting at or after ``search_from``, else None."""
    best = None
    for s in stops:
        i = text.find(s, search_from)
        if i != -1 and (best is None or i < best):
            best = i
    return best


class _Row:
    """Decode state of one completion inside a batch."""

    __slots__ = ("req", "index", "generator", "tokens", "text", "finish", "scanned", "logprobs", "sampled_logprobs")

    def __init__(self, req: int, index: int, generator):
        self.req = req
        self.index = index
        self.generator = generator
        self.tokens: list[int] = []
        self.text: str | None = None
        self.finish: str | None = None
        self.scanned = 0  # characters of decoded text already searched for stop strings
        self.logprobs: list[dict[int, float]] | None = None
        self.sampled_logprobs: list[float] | None = None


class HFEngine:
    """Batched generation with a Hugging Face causal LM (CPU or GPU)."""

    def __init__(self, model, tokenizer, batch_size: int = 8, max_batch_tokens: int = 16384,
                 min_shared_prefix: int = 64):
        if batch_size < 1:
            raise GenerationError(f"batch_size must be >= 1 (got {batch_size})")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        # Prompts sharing at least this many leading tokens are batched together and their common
        # prefix is prefilled once (0: off). LongReward's judge prompts for one question share ~80%.
        self.min_shared_prefix = min_shared_prefix
        # Caps the prefill (rows x padded prompt length) so long prompts do not exhaust memory.
        self.max_batch_tokens = max_batch_tokens
        self.model.eval()
        eos = {tokenizer.eos_token_id}
        gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        eos.update(gen_eos if isinstance(gen_eos, list) else [gen_eos])
        self.eos_token_ids = sorted(t for t in eos if t is not None)
        pad = tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else self.eos_token_ids[0]
        self.name = getattr(getattr(model, "config", None), "_name_or_path", "") or "model"

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        dtype: str = "auto",
        device: str = "cpu",
        batch_size: int = 8,
        max_batch_tokens: int = 16384,
    ) -> HFEngine:
        from alignkit.models import load_causal_lm, load_tokenizer

        model = load_causal_lm(name_or_path, dtype=dtype, device=device)
        engine = cls(model, load_tokenizer(name_or_path), batch_size, max_batch_tokens)
        engine.name = name_or_path
        return engine

    @property
    def max_context(self) -> int:
        """Longest prompt + completion the model accepts (``max_position_embeddings``)."""
        cfg = self.model.config
        return int(getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", 2048))

    def render(self, prompt: Prompt, apply_chat_template: bool = True) -> str:
        return render_prompt(self.tokenizer, prompt, apply_chat_template)

    def encode(self, prompt: Prompt, apply_chat_template: bool = True) -> list[int]:
        """Token ids exactly as :meth:`generate` feeds them to the model."""
        return encode_prompt(self.tokenizer, prompt, apply_chat_template)[1]

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False).input_ids)

    # ------------------------------------------------------------------ generation
    def generate(
        self,
        prompts: Sequence[Prompt],
        params: SamplingParams,
        *,
        apply_chat_template: bool = True,
        progress: bool = False,
        seeds: Sequence[int | None] | None = None,
        on_token: TokenCallback | None = None,
    ) -> list[GenerationResult]:
        """Generate ``params.n`` completions per prompt; results in input order.

        ``seeds`` (optional, one per prompt) overrides ``params.seed`` per request, so one call can
        serve many independently seeded requests (the server and the judge batch them this way).
        ``on_token(request, completion, token_id)`` is called from the decode loop right after each
        step, for every row still decoding, so a caller can stream tokens while the model runs (keep it
        cheap: it runs between forward passes; an exception from it aborts the call).
        """
        import torch

        params.validate()
        if seeds is not None and len(seeds) != len(prompts):
            raise GenerationError(
                f"seeds: expected {len(prompts)} entries (one per prompt), got {len(seeds)}"
            )
        encoded = [encode_prompt(self.tokenizer, p, apply_chat_template) for p in prompts]
        for i, (_, ids) in enumerate(encoded):
            if len(ids) + params.max_new_tokens > self.max_context:
                raise GenerationError(
                    f"prompt {i}: {len(ids)} prompt tokens + max_new_tokens={params.max_new_tokens} exceed the "
                    f"model's context window of {self.max_context} tokens"
                )
        # One seed per request; unseeded requests draw theirs from torch's global RNG so that
        # torch.manual_seed still makes a whole run reproducible.
        requested = list(seeds) if seeds is not None else [params.seed] * len(prompts)
        seeds = [s if s is not None else int(torch.randint(0, 2**62, (1,)).item()) for s in requested]
        outputs: list[list[_Row | None]] = [[None] * params.n for _ in prompts]
        total = len(prompts) * params.n
        from alignkit.progress import ProgressBar

        bar = ProgressBar("generate", total, enabled=progress and total > 0)
        with bar, torch.inference_mode():
            for batch in self._plan(encoded, params.n):
                rows = [
                    _Row(req, j, self._generator(completion_seed(seeds[req], j)))
                    for req, js in batch
                    for j in js
                ]
                self._decode(batch, [encoded[req][1] for req, _ in batch], rows, params, bar, on_token)
                for r in rows:
                    outputs[r.req][r.index] = r
        results = []
        for (text, ids), rows in zip(encoded, outputs, strict=True):
            comps = [
                Completion(text=r.text, token_ids=r.tokens, finish_reason=r.finish, logprobs=r.logprobs,
                           sampled_logprobs=r.sampled_logprobs)
                for r in rows
            ]
            results.append(GenerationResult(prompt=text, prompt_tokens=len(ids), completions=comps))
        return results

    def _generator(self, seed: int):
        import torch

        g = torch.Generator(device=self.model.device)
        g.manual_seed(seed)
        return g

    def _plan(self, encoded: list[tuple[str, list[int]]], n: int) -> list[list[tuple[int, list[int]]]]:
        """Group (request, completion indices) into batches: longest prompts first, row and token budgets.

        Each entry is one prompt prefilled once; its completion indices share that prefill.
        """
        groups = _prefix_groups([ids for _, ids in encoded], self.min_shared_prefix)
        # Prompts with a shared prefix first, group by group (each group batched on its own so the
        # prefix is prefilled once), then the others, longest first.
        singles = sorted(sorted(g[0] for g in groups if len(g) == 1), key=lambda i: -len(encoded[i][1]))
        shared = [sorted(g, key=lambda i: -len(encoded[i][1])) for g in groups if len(g) > 1]
        boundaries = set()
        order: list[int] = []
        for g in shared:
            order += g
            boundaries.add(g[0])
        order += singles
        if singles:
            boundaries.add(singles[0])
        units: list[tuple[int, list[int]]] = []
        for req in order:
            for start in range(0, n, self.batch_size):
                units.append((req, list(range(start, min(n, start + self.batch_size)))))
        batches: list[list[tuple[int, list[int]]]] = []
        cur: list[tuple[int, list[int]]] = []
        rows = 0
        for unit in units:
            length = len(encoded[unit[0]][1])
            # sorted longest first, so the first prompt of a batch sets its padded length
            width = len(encoded[cur[0][0]][1]) if cur else length
            if cur and (
                rows + len(unit[1]) > self.batch_size or width * (len(cur) + 1) > self.max_batch_tokens
                or (unit[0] in boundaries and unit[0] != cur[-1][0])
            ):
                batches.append(cur)
                cur, rows = [], 0
            cur.append(unit)
            rows += len(unit[1])
        if cur:
            batches.append(cur)
        return batches

    def _decode(
        self, batch, prompt_ids: list[list[int]], rows: list[_Row], params: SamplingParams, bar,
        on_token: TokenCallback | None = None,
    ) -> None:
        import torch

        device = self.model.device
        out, mask = self._prefill(prompt_ids)
        cache = out.past_key_values
        logits = out.logits[:, -1, :]
        # Expand each prompt to its completions: prefill once, repeat the cache.
        repeats = torch.tensor([len(js) for _, js in batch], device=device)
        if int(repeats.max()) > 1:
            select = torch.repeat_interleave(torch.arange(len(batch), device=device), repeats)
            cache.batch_select_indices(select)
            logits, mask = logits[select], mask[select]
        last_pos = mask.sum(-1) - 1
        stop_ids = torch.tensor(sorted(set(self.eos_token_ids) | set(params.stop_token_ids)), device=device)
        active = list(rows)
        step = 0
        while True:
            if step < params.min_new_tokens:
                logits = logits.index_fill(-1, stop_ids, float("-inf"))
            next_tokens, sampled_lp = self._sample(logits.float(), active, params)
            if params.sampled_logprobs:
                for row, lp in zip(active, sampled_lp.tolist(), strict=True):
                    if row.sampled_logprobs is None:
                        row.sampled_logprobs = []
                    row.sampled_logprobs.append(lp)
            if params.logprobs:
                full = torch.log_softmax(logits.float(), dim=-1)
                top = full.topk(params.logprobs, dim=-1)
                chosen = full.gather(-1, next_tokens[:, None]).squeeze(-1).tolist()
                for i, (row, ids, vals) in enumerate(
                    zip(active, top.indices.tolist(), top.values.tolist(), strict=True)
                ):
                    step_lp = dict(zip(ids, vals, strict=True))
                    step_lp.setdefault(
                        int(next_tokens[i]), chosen[i]
                    )  # the sampled token, even outside the top k
                    if row.logprobs is None:
                        row.logprobs = []
                    row.logprobs.append(step_lp)
            step += 1
            keep = []
            for i, (row, tok) in enumerate(zip(active, next_tokens.tolist(), strict=True)):
                row.tokens.append(tok)
                if on_token is not None:
                    on_token(row.req, row.index, tok)
                if tok in self.eos_token_ids or tok in params.stop_token_ids:
                    row.finish = "stop"
                elif params.stop and self._hit_stop(row, params.stop):
                    row.finish = "stop"
                elif step >= params.max_new_tokens:
                    row.finish = "length"
                if row.finish is None:
                    keep.append(i)
                else:
                    self._finalise(row, params.stop)
                    bar.advance()
            if not keep:
                return
            if len(keep) < len(active):  # drop finished rows from every tensor and the cache
                idx = torch.tensor(keep, device=device)
                cache.batch_select_indices(idx)
                next_tokens, mask, last_pos = next_tokens[idx], mask[idx], last_pos[idx]
                active = [active[i] for i in keep]
            mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=-1)
            last_pos = last_pos + 1
            out = self.model(
                input_ids=next_tokens[:, None],
                attention_mask=mask,
                position_ids=last_pos[:, None],
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            )
            cache = out.past_key_values
            logits = out.logits[:, -1, :]

    def _prefill(self, prompt_ids: list[list[int]]):
        """Prompts -> (model output with KV cache and last logits, attention mask (B, T)).

        Left padding puts every prompt's next token at column -1. When the prompts share a prefix of
        at least ``min_shared_prefix`` tokens, the prefix is run once (batch 1), its cache repeated
        for every row, and only the suffixes are prefilled on top: ``[prefix, padding, suffix]``,
        positions continuing from the prefix (padding in the middle is masked out).
        """
        import torch

        device = self.model.device
        n = len(prompt_ids)
        shared = len(os.path.commonprefix(prompt_ids)) if n > 1 and self.min_shared_prefix else 0
        shared = min(shared, min(len(ids) for ids in prompt_ids) - 1)  # every row keeps >= 1 suffix token
        past = None
        if shared >= self.min_shared_prefix > 0:
            prefix = torch.tensor([prompt_ids[0][:shared]], device=device)
            past = self.model(input_ids=prefix, use_cache=True, logits_to_keep=1).past_key_values
            past.batch_select_indices(torch.zeros(n, dtype=torch.long, device=device))
            prompt_ids = [ids[shared:] for ids in prompt_ids]
        else:
            shared = 0
        width = max(len(ids) for ids in prompt_ids)
        input_ids = torch.full((n, width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((n, shared + width), dtype=torch.long)
        mask[:, :shared] = 1
        for i, ids in enumerate(prompt_ids):
            input_ids[i, width - len(ids) :] = torch.tensor(ids)
            mask[i, shared + width - len(ids) :] = 1
        input_ids, mask = input_ids.to(device), mask.to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, shared:]
        out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions, past_key_values=past,
                         use_cache=True, logits_to_keep=1)
        return out, mask

    def _sample(self, logits, rows: list[_Row], params: SamplingParams):
        """``(next token per row, its log-probability under the distribution drawn from)`` -- the second
        is None for greedy decoding. Greedy is argmax; otherwise temperature -> top-k -> top-p, then one
        uniform per row from the row's own generator mapped through the CDF (so batch composition is
        irrelevant).

        With top-k or top-p the CDF runs over the candidate tokens only, most likely first
        (:func:`candidates`), and the log-probability is that of the kept candidate mass renormalised
        (``log p_pick - log sum_kept p``); without either, the CDF runs over the whole vocabulary in token-id
        order and the log-probability is ``log_softmax(logits / T)`` at the pick.
        """
        import torch

        if params.temperature == 0.0:
            return logits.argmax(-1), None
        logits = logits / params.temperature
        if params.top_k > 0 or params.top_p < 1.0:
            probs, ids = candidates(logits, params.top_k, params.top_p)
        else:
            probs, ids = torch.softmax(logits, dim=-1), None
        u = torch.stack([torch.rand((), generator=r.generator, device=logits.device) for r in rows])
        cdf = probs.cumsum(-1)
        # searchsorted finds the first position whose cumulative mass reaches u * total: a position
        # where the mass grows, so never a zeroed token (the clamp guards the float edge u * total > cdf[-1])
        picks = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None]).clamp(max=probs.shape[-1] - 1)
        if ids is None:
            return picks.squeeze(-1), torch.log_softmax(logits, dim=-1).gather(-1, picks).squeeze(-1)
        # a picked candidate has probability > 0 (see above), so the log is finite
        logp = probs.gather(-1, picks).squeeze(-1).log() - cdf[:, -1].log()
        return ids.gather(-1, picks).squeeze(-1), logp

    def _hit_stop(self, row: _Row, stops: list[str]) -> bool:
        text = self.tokenizer.decode(row.tokens, skip_special_tokens=True)
        longest = max(len(s) for s in stops)
        # only the tail that could contain a newly completed stop string is searched
        cut = cut_at_stop(text, stops, max(0, row.scanned - longest + 1))
        row.scanned = len(text)
        if cut is None:
            return False
        row.text = text[:cut]
        return True

    def _finalise(self, row: _Row, stops: list[str]) -> None:
        if row.text is not None:  # already cut at a stop string
            return
        text = self.tokenizer.decode(row.tokens, skip_special_tokens=True)
        cut = cut_at_stop(text, stops) if stops else None
        row.text = text if cut is None else text[:cut]


def candidates(logits, top_k: int = 0, top_p: float = 1.0, first_k: int = 256):
    """``(probs, ids)``: the tokens top-k/top-p sampling can draw, most likely first, with their probabilities.

    ``logits`` (rows, vocab) are already divided by the temperature. ``top_k`` (0 = off) keeps the k most
    likely tokens and renormalises over them; ``top_p`` (1 = off) then keeps a token while the
    probability mass strictly before it (descending order) is below ``top_p`` -- the nucleus of Holtzman
    et al. 2020; the most likely token always stays. Dropped candidates have probability 0 (rows are not
    renormalised: the sampler draws in proportion to the kept mass).

    Sorting a 49k vocabulary for 64 rows costs more than the decode step itself on a CPU (~0.4 s), so
    without ``top_k`` the nucleus is looked for among the ``first_k`` most likely tokens (``topk``) with
    the probabilities of the full softmax: once their mass reaches ``top_p`` no token beyond them can be
    kept, so the result is the full sort's. Rows where it does not (flat distributions) retry with 4x
    as many tokens, up to the whole vocabulary.
    """

    vocab = logits.shape[-1]
    if top_k > 0:
        vals, ids = logits.topk(min(top_k, vocab), dim=-1)
        lse = vals.logsumexp(-1, keepdim=True)  # renormalised over the top k
        k = vals.shape[-1]
    else:
        lse = logits.logsumexp(-1, keepdim=True)
        k = min(first_k, vocab)
    while True:
        if top_k <= 0:
            vals, ids = logits.topk(k, dim=-1)
        probs = (vals - lse).exp()
        if top_p >= 1.0:
            return probs, ids
        before = probs.cumsum(-1) - probs  # mass strictly before each candidate
        if top_k > 0 or k == vocab or bool((before[:, -1] + probs[:, -1] >= top_p).all()):
            return probs.masked_fill(before >= top_p, 0.0), ids
        k = min(vocab, 4 * k)


def _prefix_groups(prompts: list[list[int]], min_shared: int) -> list[list[int]]:
    """Indices of prompts grouped so that neighbours in a group share >= ``min_shared`` leading tokens."""
    if not min_shared:
        return [[i] for i in range(len(prompts))]
    order = sorted(range(len(prompts)), key=lambda i: prompts[i])
    groups: list[list[int]] = []
    for i in order:
        if groups and len(os.path.commonprefix([prompts[groups[-1][-1]], prompts[i]])) >= min_shared:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


class VLLMEngine:
    """The same API over vLLM (GPU). Constructed only by :func:`make_engine` after checking vLLM + CUDA.

    With ``weight_sync=True`` the engine can take a trainer's current weights (:meth:`load_weights`):
    vLLM's worker gets :class:`alignkit.generate.vllm_worker.WeightSyncExtension` mixed in
    (``worker_extension_cls``) and the engine core runs in this process
    (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), so :meth:`vllm.LLM.collective_rpc` hands the trainer's tensors
    to the worker by reference instead of serialising them to another process.

    ``logprobs_mode`` is vLLM's engine setting of what its log-probabilities are: ``"raw_logprobs"``
    (vLLM's default: log-softmax of the model's logits, what ``Completion.logprobs`` documents) or
    ``"processed_logprobs"`` (after temperature, top-k and top-p: the distribution the token was drawn
    from, what ``SamplingParams.sampled_logprobs`` asks for; online RL builds its engine so). An engine
    serves one of the two and refuses requests for the other.
    """

    def __init__(self, name_or_path: str, dtype: str = "float32", batch_size: int = 8, weight_sync: bool = False,
                 logprobs_mode: str = "raw_logprobs", **llm_kwargs):
        import vllm

        from alignkit.models import resolve_model_path

        if logprobs_mode not in ("raw_logprobs", "processed_logprobs"):
            raise GenerationError(f"logprobs_mode must be raw_logprobs or processed_logprobs (got {logprobs_mode!r})")
        self._vllm = vllm
        self.weight_sync = weight_sync
        self.logprobs_mode = logprobs_mode
        if logprobs_mode != "raw_logprobs":  # vLLM >= 0.10.2; the default needs no argument (older releases too)
            llm_kwargs["logprobs_mode"] = logprobs_mode
        if weight_sync:
            from alignkit.generate.vllm_worker import WORKER_EXTENSION

            _engine_core_in_process()
            llm_kwargs["worker_extension_cls"] = WORKER_EXTENSION
        path = resolve_model_path(name_or_path)
        if dtype in ("fp32", "bf16"):  # a config precision: vLLM takes torch dtype names
            from alignkit.precision import resolve_precision

            dtype = resolve_precision(dtype).dtype
        self.llm = vllm.LLM(model=path, dtype=dtype, max_num_seqs=max(batch_size, 1), **llm_kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.batch_size = batch_size
        self.name = name_or_path

    def load_weights(self, named_tensors) -> int:
        """Replace the engine's weights by ``named_tensors`` (``(name, tensor)`` pairs with Hugging Face
        names, e.g. ``model.named_parameters()`` of the same architecture) and reset the prefix cache,
        so no KV computed with the old weights is reused. Returns the number of tensors sent.

        Raises :class:`GenerationError` when a parameter of the engine's model was not written (its old
        value would silently stay) or when vLLM reports that the prefix cache could not be reset."""
        if not self.weight_sync:
            raise GenerationError("this vLLM engine was built without weight_sync=True: it cannot take new weights")
        weights = [(name, t.detach()) for name, t in named_tensors]
        missing = sorted({n for per_worker in self.llm.collective_rpc("alignkit_load_weights", args=(weights,))
                          for n in per_worker})
        if missing:
            raise GenerationError(f"weight sync left {len(missing)} parameters of the vLLM model unwritten "
                                  f"(e.g. {missing[:3]}): the tensors sent do not cover its architecture")
        if self.llm.reset_prefix_cache() is False:  # older releases return None: nothing to check
            raise GenerationError("vLLM could not reset its prefix cache after a weight sync (requests still "
                                  "running?): cached KV of the old weights would be reused")
        return len(weights)

    @property
    def max_context(self) -> int:
        return int(self.llm.llm_engine.model_config.max_model_len)

    def render(self, prompt: Prompt, apply_chat_template: bool = True) -> str:
        return render_prompt(self.tokenizer, prompt, apply_chat_template)

    def encode(self, prompt: Prompt, apply_chat_template: bool = True) -> list[int]:
        return encode_prompt(self.tokenizer, prompt, apply_chat_template)[1]

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False).input_ids)

    def generate(
        self,
        prompts: Sequence[Prompt],
        params: SamplingParams,
        *,
        apply_chat_template: bool = True,
        progress: bool = False,
        seeds: Sequence[int | None] | None = None,
        on_token: TokenCallback | None = None,
    ) -> list[GenerationResult]:
        """As :meth:`HFEngine.generate`, except that ``on_token`` is called only once vLLM has finished
        the whole call (every token of every completion, in order): offline ``LLM.generate`` does not
        hand out tokens while it decodes, so a stream over this backend arrives at the end."""
        params.validate()
        processed = self.logprobs_mode == "processed_logprobs"
        if params.sampled_logprobs and not processed:
            raise GenerationError("sampled_logprobs needs a vLLM engine built with logprobs_mode='processed_logprobs' "
                                  "(this one reports raw log-probabilities, before temperature/top-k/top-p)")
        if params.logprobs and processed:
            raise GenerationError("this vLLM engine reports processed log-probabilities (logprobs_mode="
                                  "'processed_logprobs'); top logprobs are documented as raw: use an engine built "
                                  "with the default logprobs_mode")
        if seeds is not None and len(seeds) != len(prompts):
            raise GenerationError(
                f"seeds: expected {len(prompts)} entries (one per prompt), got {len(seeds)}"
            )
        requested = list(seeds) if seeds is not None else [params.seed] * len(prompts)
        encoded = [encode_prompt(self.tokenizer, p, apply_chat_template) for p in prompts]
        sp = [
            self._vllm.SamplingParams(
                n=params.n,
                temperature=params.temperature,
                top_p=params.top_p,
                top_k=params.top_k if params.top_k > 0 else -1,
                max_tokens=params.max_new_tokens,
                min_tokens=params.min_new_tokens,
                stop=list(params.stop) or None,
                stop_token_ids=list(params.stop_token_ids) or None,
                seed=seed,
                # 0: only the sampled token's log-probability (vLLM always adds the sampled token)
                logprobs=params.logprobs or (0 if params.sampled_logprobs else None),
            )
            for seed in requested
        ]
        outs = self.llm.generate([{"prompt_token_ids": ids} for _, ids in encoded], sp, use_tqdm=progress)
        results = []
        for (text, ids), out in zip(encoded, outs, strict=True):
            comps = [
                Completion(
                    text=c.text,
                    token_ids=list(c.token_ids),
                    finish_reason="length" if c.finish_reason == "length" else "stop",
                    logprobs=[{t: lp.logprob for t, lp in step.items()} for step in c.logprobs]
                    if params.logprobs and c.logprobs
                    else None,
                    sampled_logprobs=[step[t].logprob for t, step in zip(c.token_ids, c.logprobs, strict=True)]
                    if params.sampled_logprobs
                    else None,
                )
                for c in out.outputs
            ]
            results.append(GenerationResult(prompt=text, prompt_tokens=len(ids), completions=comps))
        if on_token is not None:
            for req, res in enumerate(results):
                for j, comp in enumerate(res.completions):
                    for tok in comp.token_ids:
                        on_token(req, j, tok)
        return results


def _engine_core_in_process() -> None:
    """Weight sync passes tensors by reference, so vLLM's engine core must run in this process."""
    key = "VLLM_ENABLE_V1_MULTIPROCESSING"
    if os.environ.get(key, "0") != "0":
        raise GenerationError(f"{key}={os.environ[key]}: weight sync into vLLM needs the engine core in the "
                              f"trainer's process; unset it or set {key}=0")
    os.environ[key] = "0"


def vllm_available() -> tuple[bool, str]:
    """(usable, reason): vLLM needs the package and a CUDA GPU."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return False, "the vllm package is not installed (pip install vllm)"
    import torch

    if not torch.cuda.is_available():
        return False, "no CUDA GPU is visible (torch.cuda.is_available() is False)"
    return True, "vllm and a CUDA GPU are present"


def make_engine(name_or_path: str, backend: str = "auto", **kw) -> Engine:
    """Build a generation engine: ``"hf"``, ``"vllm"`` or ``"auto"`` (vLLM only when usable).

    An explicit ``"vllm"`` request that cannot be honoured raises :class:`GenerationError`; it is never
    silently served by the HF engine. Keyword arguments go to the backend's constructor
    (``dtype``, ``device``, ``batch_size`` for HF).
    """
    if backend not in ("auto", "hf", "vllm"):
        raise GenerationError(f"unknown generation backend {backend!r}; choose auto, hf or vllm")
    device = kw.get("device")
    if backend in ("auto", "vllm"):
        ok, reason = vllm_available()
        if backend == "vllm" and device is not None and not str(device).startswith("cuda"):
            ok, reason = False, f"vLLM runs on CUDA GPUs only (device={device!r} was requested)"
        if ok and (device is None or str(device).startswith("cuda")):
            kw.pop("device", None)
            return VLLMEngine(name_or_path, **kw)
        if backend == "vllm":
            raise GenerationError(f"backend 'vllm' was requested but cannot be used: {reason}")
    return HFEngine.from_pretrained(name_or_path, **kw)
