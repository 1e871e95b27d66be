"""Supervised fine-tuning: ``alignkit sft``.

Token-level NLL on response tokens only (prompt tokens are context, not targets). The loss of an
optimizer step is the sum of response-token NLLs over the global batch divided by the number of
response tokens in the global batch, however the batch is split (see ``train.loop``).
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from alignkit.config import StrictModel
from alignkit.data.batching import collate, collate_segments
from alignkit.train.loop import TrainConfig, Trainer
from alignkit.train.run import (
    DataConfig,
    LogpsForward,
    ModelConfig,
    forward_logps,
    load_data,
    load_policy,
    make_accelerator,
    prepare_output,
    resolve_run_precision,
    seed_everything,
    write_summary,
)


class SFTConfig(StrictModel):
    """``alignkit sft`` recipe. Rows: ``{"messages": [...]}`` or ``{"prompt", "completion"}``."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig
    train: TrainConfig = Field(default_factory=TrainConfig)
    pack: bool = True
    """Padding-free batches: several rows' sequences share a row of the batch under a block-diagonal
    attention mask with per-sequence positions (same loss and gradients as padded batches; needs
    ``sdpa`` or ``eager`` attention). false: right-padded rows."""


def make_sft_collate(pack: bool, pad_id: int):
    """Batches of SFT examples: packed (:func:`collate_segments`) or right-padded (:func:`collate`)."""
    if pack:
        return lambda exs: collate_segments(exs, pad_id, shared_prompt=False, pack=True, n_comp=1)
    return lambda exs: collate(exs, pad_id, n_comp=1)


class SFTObjective:
    """Units are response tokens; returns the summed token NLL and per-example mean NLL."""

    def units(self, batch: dict[str, torch.Tensor]) -> int:
        return int(batch["loss_mask"].sum())

    def __call__(self, model, batch):
        logps, counts = forward_logps(model, batch)
        nll = -logps[:, 0]
        return nll.sum(), {"nll/token_mean": (nll / counts[:, 0].clamp(min=1)).detach()}


@torch.no_grad()
def evaluate_nll(model: LogpsForward, examples, collate_fn, batch_size: int, device) -> dict[str, float]:
    """Held-out token-level NLL and perplexity (sum over tokens / tokens)."""
    was = model.training
    model.eval()
    total, tokens = 0.0, 0
    for i in range(0, len(examples), batch_size):
        b = {k: v.to(device) for k, v in collate_fn(examples[i : i + batch_size]).items()}
        lp, cnt = forward_logps(model, b)
        total += float(-lp.float().sum())
        tokens += int(cnt.sum())
    model.train(was)
    nll = total / max(tokens, 1)
    return {"nll": nll, "ppl": float(torch.tensor(nll).exp()), "tokens": tokens}


def train_sft(cfg: SFTConfig, resume: bool = False) -> dict[str, Any]:
    from alignkit.train.checkpoint import export_model
    from alignkit.train.inloop_eval import finish, hf_evals

    prec = resolve_run_precision(cfg.train.precision)
    acc = make_accelerator(prec.precision)
    seed_everything(cfg.train.seed)
    model, tok = load_policy(cfg.model, cfg.train.seed)
    train, evals, summary = load_data(cfg.data, "sft", tok, cfg.train.seed)
    inloop = hf_evals(cfg.train, acc, tok)  # reads and checks the train.eval files before anything is written
    out = prepare_output(acc, cfg, cfg.train.output_dir)  # only once the data is known to be valid
    fwd = LogpsForward(model.to(acc.device))
    collate_fn = make_sft_collate(cfg.pack, tok.pad_token_id)
    evaluate = (lambda m: evaluate_nll(acc.unwrap_model(m), evals, collate_fn, cfg.train.batch_size,
                                       acc.device)) if evals else None
    before = evaluate(fwd) if evaluate else {}
    trainer = Trainer(cfg.train, acc, fwd, train, SFTObjective(), collate_fn,
                      run_state={"data": summary.as_dict()}, evaluate=evaluate,
                      evals=(lambda m: inloop(acc.unwrap_model(m).model)) if inloop else None)
    result = trainer.train(resume=resume)
    after = {}
    if not result.interrupted:
        export_model(acc, trainer.model, tok, out,
                     merge_lora=cfg.model.lora.merge_on_save if cfg.model.lora else True)
        after = evaluate(trainer.model) if evaluate else {}
    payload = {"recipe": "sft", "precision": prec.as_dict(), "pack": cfg.pack, "steps": result.step, "interrupted": result.interrupted, "signal": result.signal,
               "data": summary.as_dict(), "eval_before": before, "eval_after": after,
               "final_loss": result.history[-1]["loss"] if result.history else None, "output_dir": str(out)}
    finish(inloop, out, payload, acc.is_main_process)
    write_summary(acc, out, payload)
    return payload
