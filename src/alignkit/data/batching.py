"""Batching: right-padded tensors with a response-token loss mask.

Every example contributes one sequence per completion (SFT: 1, preference: 2, K-way: K). A batch
of B examples with C completions each becomes ``(B*C, T)`` tensors laid out completion-major
(all first completions, then all second ...), so ``logps.view(C, B).T`` gives ``(B, C)``.
``loss_mask[b, t]`` is True iff token ``t`` belongs to the response (it is predicted at ``t-1``) and is
trained (a multi-turn completion's tool results and user turns are not: ``completion_masks``).
"""

from __future__ import annotations

import torch

from alignkit.data.tokenize import TokenizedExample


def collate(examples: list[TokenizedExample], pad_id: int, n_comp: int | None = None) -> dict[str, torch.Tensor]:
    """Pad ``examples`` into one batch; see the module docstring for the layout.

    ``n_comp`` (default: the most completions any example has): an example with fewer gets a
    two-token placeholder sequence in each missing slot, marked False in ``valid`` ``(B, C)``; its
    log-prob must be ignored (:func:`alignkit.train.run.forward_logps` zeroes it).
    """
    if not examples:
        raise ValueError("cannot collate an empty batch")
    n_comp = n_comp or max(len(ex.completion_ids) for ex in examples)
    seqs: list[tuple[list[int], int, list[bool] | None]] = []  # (token ids, prompt length, completion mask)
    for c in range(n_comp):
        for ex in examples:
            if c < len(ex.completion_ids):
                seqs.append((ex.prompt_ids + ex.completion_ids[c], len(ex.prompt_ids), _mask(ex, c)))
            else:
                seqs.append(([pad_id, pad_id], 1, None))
    width = max(len(s) for s, _, _ in seqs)
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(seqs), width), dtype=torch.long)
    loss_mask = torch.zeros((len(seqs), width), dtype=torch.bool)
    for i, (ids, plen, mask) in enumerate(seqs):
        input_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[i, : len(ids)] = 1
        loss_mask[i, plen : len(ids)] = True if mask is None else torch.tensor(mask)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "loss_mask": loss_mask,
        "valid": _valid(examples, n_comp),
        **_index_and_rewards(examples, n_comp),
    }


def _mask(ex: TokenizedExample, c: int) -> list[bool] | None:
    """Which tokens of completion ``c`` are trained (None: all)."""
    return ex.completion_masks[c] if ex.completion_masks is not None else None


def by_completion(values: torch.Tensor, n_comp: int) -> torch.Tensor:
    """Reshape a flat ``(B*C,)`` per-sequence tensor from :func:`collate` to ``(B, C)``."""
    return values.view(n_comp, -1).transpose(0, 1)


def collate_segments(
    examples: list[TokenizedExample], pad_id: int, *, shared_prompt: bool = True, pack: bool = True,
    n_comp: int | None = None,
) -> dict[str, torch.Tensor]:
    """Padding-free / shared-prompt batch: several sequences per row, kept apart by a 4-D attention mask.

    A *document* is ``[prompt, c_1, ..., c_K]`` (``shared_prompt``: the prompt is computed once for
    all K completions) or ``[prompt, c_k]`` (one per completion). Every completion token attends to
    its document's prompt and to the earlier tokens of its own completion only; positions restart
    at 0 for each document and every completion continues from the prompt's end, so each
    completion's log-probs equal those of ``prompt + c_k`` as a sequence of its own. ``pack`` puts
    several documents in one row (first-fit decreasing, never wider than the longest document), so
    padding is only what is left at the end of a row.

    Returns ``input_ids``/``position_ids`` ``(R, T)``, ``attention_mask`` ``(R, 1, T, T)`` bool
    (True = attend; a padding position attends to itself so no row of the mask is empty),
    ``loss_mask`` ``(R, T)`` (True on completion tokens), ``predictor`` ``(R, T)`` (the position whose
    hidden state predicts that token: the previous one, or the prompt's last for a first token),
    ``sequence`` ``(R, T)`` (output slot ``c * B + b`` of completion ``c`` of example ``b``, the
    layout of :func:`collate`), ``valid`` ``(B, C)`` (False where an example has fewer than
    ``C = n_comp`` completions: that slot gets no tokens, log-prob 0 and count 0), ``index`` and
    ``rewards`` (``(B, C)``, 0 where not valid).
    """
    if not examples:
        raise ValueError("cannot collate an empty batch")
    n_comp = n_comp or max(len(ex.completion_ids) for ex in examples)
    n_ex = len(examples)
    docs: list[tuple[list[int], list[tuple[list[int], int, list[bool] | None]]]] = []  # (prompt, [(completion, slot, mask)])
    for b, ex in enumerate(examples):
        if not ex.prompt_ids:
            raise ValueError(f"example {ex.index}: empty prompt (the first completion token needs a predictor)")
        parts = [(c, k * n_ex + b, _mask(ex, k)) for k, c in enumerate(ex.completion_ids[:n_comp])]
        docs.extend([(ex.prompt_ids, parts)] if shared_prompt else [(ex.prompt_ids, [p]) for p in parts])
    lengths = [len(p) + sum(len(c) for c, _, _ in parts) for p, parts in docs]
    rows = _assign_rows(lengths, pack)
    width = max(sum(lengths[d] for d in row) for row in rows)
    shape = (len(rows), width)
    input_ids = torch.full(shape, pad_id, dtype=torch.long)
    position_ids = torch.zeros(shape, dtype=torch.long)
    predictor = torch.zeros(shape, dtype=torch.long)
    sequence = torch.zeros(shape, dtype=torch.long)
    doc_of = torch.full(shape, -1, dtype=torch.long)  # which document a position belongs to (-1: padding)
    part_of = torch.zeros(shape, dtype=torch.long)  # 0: prompt, k + 1: the document's k-th completion
    untrained = torch.zeros(shape, dtype=torch.bool)  # completion tokens that are context (tool results)
    for r, row in enumerate(rows):
        at = 0
        for d in row:
            prompt, parts = docs[d]
            end = at + len(prompt)
            input_ids[r, at:end] = torch.tensor(prompt)
            position_ids[r, at:end] = torch.arange(len(prompt))
            doc_of[r, at:end] = d
            for k, (comp, slot, mask) in enumerate(parts):
                span = slice(end, end + len(comp))
                if mask is not None:
                    untrained[r, span] = ~torch.tensor(mask)
                input_ids[r, span] = torch.tensor(comp, dtype=torch.long)
                position_ids[r, span] = torch.arange(len(prompt), len(prompt) + len(comp))
                predictor[r, span] = torch.arange(end - 1, end + len(comp) - 1)
                predictor[r, end] = at + len(prompt) - 1  # the first token is predicted by the prompt's last
                sequence[r, span], doc_of[r, span], part_of[r, span] = slot, d, k + 1
                end += len(comp)
            at = end
    return {
        "input_ids": input_ids,
        "position_ids": position_ids,
        "attention_mask": _segment_mask(doc_of, part_of),
        "loss_mask": (part_of > 0) & ~untrained,
        "predictor": predictor,
        "sequence": sequence,
        "valid": _valid(examples, n_comp),
        **_index_and_rewards(examples, n_comp),
    }


def _assign_rows(lengths: list[int], pack: bool) -> list[list[int]]:
    """Documents per row: one each, or first-fit decreasing into rows of the longest document's length."""
    if not pack:
        return [[d] for d in range(len(lengths))]
    cap, rows, free = max(lengths), [], []
    for d in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        slot = next((r for r, f in enumerate(free) if f >= lengths[d]), None)
        if slot is None:
            rows.append([d])
            free.append(cap - lengths[d])
        else:
            rows[slot].append(d)
            free[slot] -= lengths[d]
    return rows


def _segment_mask(doc_of: torch.Tensor, part_of: torch.Tensor) -> torch.Tensor:
    """``(R, 1, T, T)`` bool: query i sees key j <= i of its document's prompt or of its own part."""
    t = doc_of.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    same_doc = (doc_of[:, :, None] == doc_of[:, None, :]) & (doc_of[:, :, None] >= 0)
    visible = (part_of[:, None, :] == 0) | (part_of[:, :, None] == part_of[:, None, :])
    mask = same_doc & visible & causal
    return (mask | torch.eye(t, dtype=torch.bool)).unsqueeze(1)  # padding attends to itself (no empty row)


def _valid(examples: list[TokenizedExample], n_comp: int) -> torch.Tensor:
    return torch.tensor([[k < len(ex.completion_ids) for k in range(n_comp)] for ex in examples])


def _index_and_rewards(examples: list[TokenizedExample], n_comp: int) -> dict[str, torch.Tensor]:
    out = {"index": torch.tensor([ex.index for ex in examples], dtype=torch.long)}
    if examples[0].rewards is not None:
        out["rewards"] = torch.tensor([list(ex.rewards[:n_comp]) + [0.0] * (n_comp - len(ex.rewards[:n_comp]))
                                       for ex in examples], dtype=torch.float32)
    return out
