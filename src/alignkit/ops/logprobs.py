"""Sequence log-probabilities of response tokens, with the lm-head applied only where it is needed.

``log pi(y|x) = sum_{t in response} log softmax(z_{t-1} / T)[y_t]`` (METHODS.md Appendix A), where
``z_{t-1} = lm_head(h_{t-1})`` and ``h`` is the backbone's final hidden state. Instead of the model's
``B x T x V`` logits we gather the ``N`` hidden states that predict response tokens and run the
lm-head + float32 log-softmax over them ``chunk_size`` rows at a time, so peak memory is
``chunk_size x V`` floats (with gradients each chunk is checkpointed and recomputed in backward).

The model is called through its own top-level ``forward`` (``logits_to_keep=1``), never by reaching
into the backbone: DDP, FSDP and DeepSpeed do their gradient-sync and parameter-gathering work in
that call. The backbone's output is captured with a forward hook.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


@dataclass
class ResponseLogps:
    """Per-sequence results of :func:`response_logps`."""

    logps: Tensor  # (B,) float32 sum of response-token log-probs (grad flows when the model is trainable)
    counts: Tensor  # (B,) long, number of response tokens


class UnsupportedModelError(ValueError):
    """The model computes its logits in a way :func:`response_logps` does not reproduce."""


# Config fields (with their neutral value) that make the logits more than ``lm_head(h)``; seen in
# transformers 5.x: Gemma 2/3 and others (soft-capping), Cohere (scale), Granite and HyperCLOVA X
# (scaling), Falcon-H1 (multiplier).
_LOGIT_POSTPROCESSING = {
    "final_logit_softcapping": None,
    "logit_scale": 1.0,
    "logits_scaling": 1.0,
    "lm_head_multiplier": 1.0,
    "output_multiplier": 1.0,
}


def _hf_model(model: nn.Module) -> nn.Module:
    """The Hugging Face ``PreTrainedModel`` inside torch.compile / PEFT / DDP / FSDP / DeepSpeed wrappers."""
    inner = model
    for _ in range(8):
        if hasattr(inner, "_orig_mod"):  # torch.compile
            inner = inner._orig_mod
        elif callable(getattr(inner, "get_base_model", None)):  # PEFT (LoRA adapters live inside it)
            inner = inner.get_base_model()
        elif (
            hasattr(inner, "config")
            and hasattr(inner, "get_decoder")
            and hasattr(inner, "get_output_embeddings")
        ):
            return inner
        elif isinstance(getattr(inner, "module", None), nn.Module):  # DDP, FSDP1, DeepSpeed engine
            inner = inner.module
        else:
            break
    raise UnsupportedModelError(
        f"{type(model).__name__} is not a Hugging Face causal LM (or a wrapper of one)"
    )


def _check_architecture(hf: nn.Module) -> None:
    configs = [hf.config]
    if hasattr(hf.config, "get_text_config"):
        configs.append(hf.config.get_text_config())
    for cfg in configs:
        for field, neutral in _LOGIT_POSTPROCESSING.items():
            value = getattr(cfg, field, neutral)
            if value != neutral:
                raise UnsupportedModelError(
                    f"{type(hf).__name__}: config.{field}={value!r} post-processes the logits, which "
                    f"response_logps does not reproduce; refusing rather than computing wrong log-probs"
                )
    import inspect

    if "logits_to_keep" not in inspect.signature(hf.forward).parameters:
        raise UnsupportedModelError(
            f"{type(hf).__name__}.forward has no `logits_to_keep` argument, so it would materialise B x T x V logits"
        )


def _token_logps(lm_head: nn.Module, hidden: Tensor, targets: Tensor, temperature: float) -> Tensor:
    """``(n, H)`` hidden states, ``(n,)`` target ids -> ``(n,)`` log-probs; log-softmax in float32."""
    logits = lm_head(hidden)
    with torch.autocast(device_type=hidden.device.type, enabled=False):
        logp = (logits.float() / temperature).log_softmax(dim=-1)
    return logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def _check_logits(lm_head: nn.Module, hidden_last: Tensor, model_logits: Tensor, name: str) -> None:
    # Our path must reproduce the model's own logits; the model computed them at the last position
    # (logits_to_keep=1), so this catches post-processing no config field announces, at one (B, V) matmul.
    with torch.no_grad():
        ours, theirs = lm_head(hidden_last).float(), model_logits.float()
        low_precision = model_logits.dtype in (torch.bfloat16, torch.float16) or torch.is_autocast_enabled(
            hidden_last.device.type
        )
        tol = (2e-2 if low_precision else 1e-4) * (1.0 + theirs.abs().max().item())
        err = (ours - theirs).abs().max().item()
    if not err <= tol:
        raise UnsupportedModelError(
            f"{name}: lm_head(final hidden state) differs from the model's logits by {err:.3g} (tolerance "
            f"{tol:.3g}); its forward post-processes the logits in a way response_logps does not reproduce"
        )


def _check_batch(
    input_ids: Tensor, attention_mask: Tensor, loss_mask: Tensor, temperature: float, chunk_size: int
):
    if input_ids.dim() != 2 or attention_mask.shape != input_ids.shape or loss_mask.shape != input_ids.shape:
        raise ValueError(
            "input_ids, attention_mask and loss_mask must all be (B, T); got "
            f"{tuple(input_ids.shape)}, {tuple(attention_mask.shape)}, {tuple(loss_mask.shape)}"
        )
    _check_options(temperature, chunk_size)
    if loss_mask[:, 0].any():
        raise ValueError(
            "loss_mask[:, 0] must be False: the first token has no preceding position to predict it"
        )
    if (loss_mask & ~attention_mask.bool()).any():
        raise ValueError("loss_mask selects padding positions (attention_mask == 0)")
    empty = (~loss_mask.any(dim=1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(
            f"rows {empty} have no response tokens (loss_mask all False); drop them before batching"
        )


def _check_options(temperature: float, chunk_size: int) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not (isinstance(chunk_size, int) and chunk_size >= 1):
        raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")


def _check_segments(input_ids: Tensor, attention_mask: Tensor, loss_mask: Tensor, position_ids: Tensor | None,
                    predictor: Tensor, sequence: Tensor | None, n_sequences: int | None) -> None:
    r, t = input_ids.shape
    if attention_mask.shape != (r, 1, t, t) or attention_mask.dtype != torch.bool:
        raise ValueError(f"the segment layout needs a (R, 1, T, T) bool attention mask; got {tuple(attention_mask.shape)}")
    if any(x is None or x.shape != (r, t) for x in (position_ids, predictor, sequence, loss_mask)):
        raise ValueError("the segment layout needs position_ids, predictor, sequence and loss_mask of shape (R, T)")
    if n_sequences is None or (loss_mask.any() and int(sequence[loss_mask].max()) >= n_sequences):
        raise ValueError(f"n_sequences ({n_sequences}) must exceed every output slot in `sequence`")
    picked = predictor[loss_mask]
    if (picked < 0).any() or (picked >= loss_mask.nonzero()[:, 1]).any():
        raise ValueError("predictor must point at an earlier position of the same row")


def _segment_mask_for(hf: nn.Module, mask: Tensor, decoder: nn.Module) -> Tensor:
    """The bool 4-D mask as the attention implementation wants it: as is (sdpa), additive (eager)."""
    impl = getattr(hf.config, "_attn_implementation", None)
    if impl == "sdpa":
        return mask
    if impl == "eager":
        dtype = next(decoder.parameters()).dtype
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)
    raise UnsupportedModelError(
        f"{type(hf).__name__}: packed / shared-prompt batches need attn_implementation sdpa or eager (got {impl!r})"
    )


class _States(NamedTuple):
    """What one forward pass leaves for the lm-head: ``states[i]`` predicts ``targets[i]``, which is
    token ``(rows[i], tgt[i])`` of the input and is summed into output slot ``out_index[i]``."""

    rows: Tensor
    tgt: Tensor
    out_index: Tensor
    n_out: int
    states: Tensor
    targets: Tensor
    lm_head: nn.Module


def _response_states(model: nn.Module, input_ids: Tensor, attention_mask: Tensor, loss_mask: Tensor,
                     temperature: float, chunk_size: int, position_ids: Tensor | None = None,
                     predictor: Tensor | None = None, sequence: Tensor | None = None,
                     n_sequences: int | None = None) -> _States:
    """One forward pass of the backbone, in the padded layout or the segment layout (see
    :func:`response_logps`); returns the hidden states that predict the scored tokens."""
    loss_mask = loss_mask.bool()
    if predictor is None:
        _check_batch(input_ids, attention_mask, loss_mask, temperature, chunk_size)
        # Right padding: positions 0..len-1 either way; cumsum also keeps left-padded batches correct.
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        rows, src = loss_mask[:, 1:].nonzero(as_tuple=True)  # position t-1 predicts token t
        tgt, out_index, n_out = src + 1, rows, input_ids.shape[0]
    else:
        _check_segments(input_ids, attention_mask, loss_mask, position_ids, predictor, sequence, n_sequences)
        _check_options(temperature, chunk_size)
        rows, tgt = loss_mask.nonzero(as_tuple=True)
        src, out_index, n_out = predictor[rows, tgt], sequence[rows, tgt], n_sequences
    hf = _hf_model(model)
    _check_architecture(hf)
    decoder, lm_head = hf.get_decoder(), hf.get_output_embeddings()
    if lm_head is None:
        raise UnsupportedModelError(f"{type(hf).__name__} has no output embeddings (lm_head)")

    captured: list[Tensor] = []

    def capture(_module: nn.Module, _args: Any, output: Any) -> None:
        captured.append(output if isinstance(output, Tensor) else output[0])

    if predictor is not None:
        attention_mask = _segment_mask_for(hf, attention_mask, decoder)
    handle = decoder.register_forward_hook(capture)
    try:
        out = model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=False,
            logits_to_keep=1,
        )
    finally:
        handle.remove()
    if len(captured) != 1 or captured[0].shape[:2] != input_ids.shape:
        raise UnsupportedModelError(
            f"{type(hf).__name__}: expected one backbone output of shape {tuple(input_ids.shape)} x H, got "
            f"{[tuple(h.shape) for h in captured]} (prompt-learning adapters add positions and are not supported)"
        )
    hidden = captured[0]
    _check_logits(lm_head, hidden[:, -1], out.logits[:, -1], type(hf).__name__)
    return _States(rows, tgt, out_index, n_out, hidden[rows, src], input_ids[rows, tgt], lm_head)


def response_logps(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    loss_mask: Tensor,
    *,
    temperature: float = 1.0,
    chunk_size: int = 1024,
    position_ids: Tensor | None = None,
    predictor: Tensor | None = None,
    sequence: Tensor | None = None,
    n_sequences: int | None = None,
) -> ResponseLogps:
    """Sum of log-probs of the response tokens of each sequence, never materialising ``B x T x V`` logits.

    Args:
        model: a Hugging Face causal LM, possibly PEFT/LoRA-, DDP-, FSDP-, DeepSpeed- or compile-wrapped.
        input_ids: ``(B, T)`` long, right-padded prompt + response.
        attention_mask: ``(B, T)``, 1 on real tokens.
        loss_mask: ``(B, T)`` bool, True on response tokens to score (token ``t`` is predicted by
            position ``t - 1``, so ``loss_mask[:, 0]`` is False); the response's EOS is included.
        temperature: logits are divided by it before the log-softmax (EXO divides policy and
            reference logits by the sampling temperature).
        chunk_size: rows of the lm-head computed at once; peak extra memory ``chunk_size x V`` floats.
        position_ids, predictor, sequence, n_sequences: the segment layout of
            :func:`alignkit.data.batching.collate_segments` (packed rows, shared prompts). Then
            ``attention_mask`` is ``(R, 1, T, T)`` bool, ``loss_mask`` marks the scored tokens themselves,
            ``predictor[r, t]`` is the position predicting token ``t`` and ``sequence[r, t]`` the output
            slot (``0 .. n_sequences - 1``) it is summed into.

    Returns:
        ``ResponseLogps(logps (B,) float32, counts (B,) long)`` (``(n_sequences,)`` in the segment
        layout). Gradients flow into trainable parameters when grad mode is on.
    Raises:
        ValueError on inconsistent masks; UnsupportedModelError for models whose logits are
        post-processed (soft-capping, scaling) or that add positions (prompt-learning adapters).
    """
    st = _response_states(model, input_ids, attention_mask, loss_mask, temperature, chunk_size,
                          position_ids, predictor, sequence, n_sequences)
    per_token = _chunked(_token_logps, st.lm_head, st.states, st.targets, temperature, chunk_size)
    logps = torch.zeros(st.n_out, dtype=torch.float32, device=input_ids.device).index_add(0, st.out_index, per_token)
    return ResponseLogps(logps=logps, counts=torch.bincount(st.out_index, minlength=st.n_out))


def _chunked(fn, lm_head: nn.Module, states: Tensor, targets: Tensor, temperature: float, chunk_size: int) -> Tensor:
    """``fn(lm_head, h, y, T)`` over ``chunk_size`` rows at a time, checkpointed when gradients are needed."""
    track_grad = torch.is_grad_enabled() and (
        states.requires_grad or any(p.requires_grad for p in lm_head.parameters())
    )
    pieces = []
    for start in range(0, targets.shape[0], chunk_size):
        h, y = states[start : start + chunk_size], targets[start : start + chunk_size]
        if track_grad:  # keep only (chunk, H) for backward; the (chunk, V) logits are recomputed
            pieces.append(checkpoint(fn, lm_head, h, y, temperature, use_reentrant=False))
        else:
            pieces.append(fn(lm_head, h, y, temperature))
    return torch.cat(pieces)


def _token_logps_entropy(lm_head: nn.Module, hidden: Tensor, targets: Tensor, temperature: float) -> Tensor:
    """``(n, 2)``: the target's log-prob and the entropy of the (temperature-scaled) distribution."""
    logits = lm_head(hidden)
    with torch.autocast(device_type=hidden.device.type, enabled=False):
        logp = (logits.float() / temperature).log_softmax(dim=-1)
    entropy = -(logp.exp() * logp).sum(-1)
    return torch.stack([logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1), entropy], dim=-1)


@dataclass
class TokenLogps:
    """Per-token results of :func:`response_token_logps`, aligned with ``input_ids``."""

    logps: Tensor  # (B, T) float32: log p(input_ids[b, t] | < t) where loss_mask[b, t], else 0
    entropy: Tensor  # (B, T) float32: entropy of the distribution that predicted token t, else 0


def response_token_logps(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    loss_mask: Tensor,
    *,
    temperature: float = 1.0,
    chunk_size: int = 1024,
) -> TokenLogps:
    """Per-token log-probs and entropies of the response tokens (what PPO needs), same forward as
    :func:`response_logps` (arguments and errors alike); ``logps.sum(-1)`` equals its ``logps``."""
    st = _response_states(model, input_ids, attention_mask, loss_mask, temperature, chunk_size)
    both = _chunked(_token_logps_entropy, st.lm_head, st.states, st.targets, temperature, chunk_size)
    out = torch.zeros(*input_ids.shape, 2, dtype=torch.float32, device=input_ids.device)
    out = out.index_put((st.rows, st.tgt), both)
    return TokenLogps(logps=out[..., 0], entropy=out[..., 1])
