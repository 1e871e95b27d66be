"""Reference log-probs, computed once and persisted under a fingerprint.

The reference model is frozen, so its log-probs over a fixed tokenised dataset are a constant.
Peers recompute them every epoch of every run (or keep a second model in memory for it). We
compute them once, store them in ``$ALIGNKIT_HOME/refcache/<fingerprint>.pt`` and reuse them
across runs and beta sweeps. The fingerprint covers everything that changes the numbers:
reference weights, tokenizer, chat template, every token id of every sequence (hence the data,
max lengths and degenerate-row policy), the logit temperature and the precision.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from alignkit.atomic import atomic_path
from alignkit.data.batching import collate
from alignkit.data.tokenize import TokenizedExample
from alignkit.fingerprints import chat_template_hash, module_fingerprint, sha256_hex, tokenizer_fingerprint
from alignkit.models import alignkit_home
from alignkit.progress import ProgressBar

CACHE_VERSION = 2  # 2: weights and tokenizer identities from alignkit.fingerprints


def weights_digest(model) -> str:
    """Identity of the reference weights (every parameter and buffer: name, dtype, shape, bytes)."""
    return module_fingerprint(model)


def tokenizer_digest(tokenizer) -> str:
    """Identity of the tokenizer and its chat template (both change the token ids)."""
    return sha256_hex([tokenizer_fingerprint(tokenizer), chat_template_hash(tokenizer)])


def fingerprint(weights: str, tok: str, examples: list[TokenizedExample], temperature: float, precision: str,
                batches: list[list[int]] | None = None, layout: dict | None = None) -> str:
    h = hashlib.sha256()
    head = {"v": CACHE_VERSION, "w": weights, "t": tok, "temp": temperature, "p": precision}
    if layout is not None:
        head["layout"] = layout
    h.update(json.dumps(head, sort_keys=True).encode())
    if batches is not None:
        h.update(json.dumps(batches).encode())
    for ex in examples:
        h.update(json.dumps([ex.prompt_ids, ex.completion_ids]).encode())
    return h.hexdigest()


def cache_path(fp: str) -> Path:
    return alignkit_home() / "refcache" / f"{fp}.pt"


@torch.no_grad()
def compute_ref_logps(
    model, examples: list[TokenizedExample], pad_id: int, batch_size: int, temperature: float,
    precision: str, device, progress: bool = False, batches: list[list[int]] | None = None, collate_fn=None,
) -> torch.Tensor:
    """``(N, C)`` summed response log-probs of ``model`` for every example, in input order.

    ``batches`` (example indices) fixes the batch composition. Under bf16 a sequence's log-prob
    depends on how far its batch is padded (kernel tiling changes the rounding, ~0.1 nat on a
    300-token response), so the recipes pass the training micro-batches of epoch 0: the reference
    then equals the initial policy bit for bit at every step of that epoch, as it should.
    ``collate_fn`` (default :func:`collate`) builds the batches, so the reference is scored in the
    policy's own layout (packed / shared-prompt); slots of missing completions are 0.
    """
    from alignkit.train.run import LogpsForward, forward_logps

    was_training = model.training
    model.eval()
    n_comp = max(len(ex.completion_ids) for ex in examples)
    collate_fn = collate_fn or (lambda exs: collate(exs, pad_id, n_comp=n_comp))
    fwd = LogpsForward(model, temperature=temperature)
    out = torch.empty(len(examples), n_comp, dtype=torch.float32)
    if batches is None:
        order = sorted(range(len(examples)), key=lambda i: -sum(len(c) for c in examples[i].completion_ids))
        chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    else:
        seen: set[int] = set()
        chunks = []
        for b in batches:  # an example repeated by wrap-around is scored in its first batch only
            chunk = [i for i in dict.fromkeys(b) if i not in seen]
            seen.update(chunk)
            if chunk:
                chunks.append(chunk)
        if len(seen) != len(examples):
            raise ValueError(f"reference batches cover {len(seen)} of {len(examples)} examples")
    autocast = torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16")
    with ProgressBar("reference log-probs", len(chunks), progress) as bar:
        for chunk in chunks:
            batch = {k: v.to(device) for k, v in collate_fn([examples[i] for i in chunk]).items()}
            with autocast:
                logps, _ = forward_logps(fwd, batch)
            out[chunk] = logps.cpu()
            bar.advance()
    model.train(was_training)
    return out


def load_or_compute(
    model, tokenizer, examples: list[TokenizedExample], *, batch_size: int, temperature: float,
    precision: str, device, accelerator=None, use_cache: bool = True, progress: bool = False,
    batches: list[list[int]] | None = None, collate_fn=None, layout: dict | None = None,
) -> tuple[torch.Tensor, dict]:
    """Reference log-probs for ``examples``; returns (tensor (N, C), info with fingerprint and hit).

    The batch composition and ``layout`` (how ``collate_fn`` lays sequences out) enter the
    fingerprint only under bf16, where they change the numbers.
    """
    bf16 = precision == "bf16"
    fp = fingerprint(weights_digest(model), tokenizer_digest(tokenizer), examples, temperature, precision,
                     batches if bf16 else None, layout if bf16 else None)
    path = cache_path(fp)
    info = {"fingerprint": fp, "path": str(path), "hit": False}
    if use_cache and path.is_file():
        data = torch.load(path, map_location="cpu", weights_only=True)
        info["hit"] = True
        return data, info
    main = accelerator is None or accelerator.is_main_process
    if main:
        data = compute_ref_logps(model, examples, tokenizer.pad_token_id, batch_size, temperature, precision,
                                 device, progress=progress, batches=batches, collate_fn=collate_fn)
        if use_cache:
            with atomic_path(path, suffix=".pt") as tmp:
                torch.save(data, tmp)
    if accelerator is not None and accelerator.num_processes > 1:
        # Other processes wait for the main one, then read its result (from disk, or broadcast).
        accelerator.wait_for_everyone()
        if not main:
            if use_cache:
                data = torch.load(path, map_location="cpu", weights_only=True)
            else:
                data = torch.empty(len(examples), max(len(ex.completion_ids) for ex in examples))
        if not use_cache:
            from accelerate.utils import broadcast

            data = broadcast(data.to(accelerator.device)).cpu()
    return data, info
