"""Reward modelling: ``alignkit rm`` (Bradley-Terry on preference pairs).

Loss ``-log sigma(r(x, y_w) - r(x, y_l) - m)`` (``alignkit.losses.bradley_terry_loss``). The score
head sits on each sequence's final real token. The exported model is an
``AutoModelForSequenceClassification`` with one label, and its pad token differs from EOS so that
Hugging Face's own pooling (last non-pad token) scores the same token we trained on.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from alignkit.config import StrictModel
from alignkit.data.batching import by_completion, collate
from alignkit.train.loop import TrainConfig, Trainer
from alignkit.train.run import (
    DataConfig,
    ModelConfig,
    RewardForward,
    load_data,
    load_policy,
    make_accelerator,
    prepare_output,
    resolve_run_precision,
    seed_everything,
    write_summary,
)


class RMConfig(StrictModel):
    """``alignkit rm`` recipe. Rows: prompt/chosen/rejected (explicit or implicit prompt)."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig
    margin: float | None = None
    """Constant margin m in the Bradley-Terry loss (null: none)."""
    train: TrainConfig = Field(default_factory=TrainConfig)


def distinct_pad(tokenizer) -> None:
    """Make the pad token differ from EOS (see the module docstring)."""
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id != tokenizer.eos_token_id:
        return
    for cand in (tokenizer.unk_token, "<|endoftext|>", "<pad>"):
        if cand is not None and cand in tokenizer.get_vocab() and cand != tokenizer.eos_token:
            tokenizer.pad_token = cand
            return
    raise ValueError("reward model export needs a pad token different from EOS; the tokenizer has none to reuse")


class RMObjective:
    def __init__(self, margin: float | None):
        self.margin = margin

    def units(self, batch):
        return int(batch["index"].numel())

    def __call__(self, model, batch):
        from alignkit.losses import bradley_terry_loss

        r = by_completion(model(batch["input_ids"], batch["attention_mask"]), 2)
        margin = None if self.margin is None else torch.full_like(r[:, 0], self.margin)
        loss, metrics = bradley_terry_loss(r[:, 0], r[:, 1], margin=margin)
        return loss.sum(), metrics


@torch.no_grad()
def evaluate_rm(model: RewardForward, examples, pad_id: int, batch_size: int, device) -> dict[str, float]:
    """Held-out pairwise accuracy and mean reward margin."""
    was = model.training
    model.eval()
    wins, margins = [], []
    for i in range(0, len(examples), batch_size):
        b = collate(examples[i : i + batch_size], pad_id)
        r = by_completion(model(b["input_ids"].to(device), b["attention_mask"].to(device)).cpu(), 2)
        wins.append((r[:, 0] > r[:, 1]).float())
        margins.append(r[:, 0] - r[:, 1])
    model.train(was)
    return {"accuracy": float(torch.cat(wins).mean()), "margin": float(torch.cat(margins).mean()),
            "n": len(examples)}


def train_rm(cfg: RMConfig, resume: bool = False) -> dict[str, Any]:
    from alignkit.models import load_tokenizer
    from alignkit.train.checkpoint import export_model

    prec = resolve_run_precision(cfg.train.precision)
    acc = make_accelerator(prec.precision)
    seed_everything(cfg.train.seed)
    tok = load_tokenizer(cfg.model.name_or_path)
    distinct_pad(tok)
    model, tok = load_policy(cfg.model, cfg.train.seed, head="reward", tokenizer=tok)
    model.config.pad_token_id = tok.pad_token_id
    train, evals, summary = load_data(cfg.data, "preference", tok, cfg.train.seed, pairwise=True)
    out = prepare_output(acc, cfg, cfg.train.output_dir)  # only once the data is known to be valid
    fwd = RewardForward(model.to(acc.device))
    evaluate = (lambda m: evaluate_rm(acc.unwrap_model(m), evals, tok.pad_token_id, cfg.train.batch_size,
                                      acc.device)) if evals else None
    before = evaluate(fwd) if evaluate else {}
    trainer = Trainer(cfg.train, acc, fwd, train, RMObjective(cfg.margin), lambda exs: collate(exs, tok.pad_token_id),
                      run_state={"data": summary.as_dict()}, evaluate=evaluate)
    result = trainer.train(resume=resume)
    after = {}
    if not result.interrupted:
        export_model(acc, trainer.model, tok, out,
                     merge_lora=cfg.model.lora.merge_on_save if cfg.model.lora else True)
        after = evaluate(trainer.model) if evaluate else {}
    payload = {"recipe": "rm", "precision": prec.as_dict(), "steps": result.step, "interrupted": result.interrupted, "signal": result.signal,
               "data": summary.as_dict(), "eval_before": before, "eval_after": after,
               "final_loss": result.history[-1]["loss"] if result.history else None, "output_dir": str(out)}
    write_summary(acc, out, payload)
    return payload
