"""Reward modelling: ``alignkit rm`` (Bradley-Terry on preference pairs, optionally multi-task).

Loss ``-log sigma(r(x, y_w) - r(x, y_l) - m)`` (``alignkit.losses.bradley_terry_loss``). With
``data.unpaired`` (TRL rows ``{"prompt", "completion", "label": bool}``) the same scalar head also
learns binary correctness: ``alignkit.losses.multitask_reward_loss`` with weight
``unpaired_weight`` (every pair and every unpaired row is one loss unit). ``data.balance_length:
bucket`` subsamples the training pairs so longer-wins and shorter-wins are equally frequent per
length-difference bucket (``alignkit.data.length_balance``; counts under ``balance`` in
summary.json). Evaluation: ``alignkit.train.reward_eval``. The score head sits on each sequence's
final real token. The exported model is an
``AutoModelForSequenceClassification`` with one label, and its pad token differs from EOS so that
Hugging Face's own pooling (last non-pad token) scores the same token we trained on.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import torch
from pydantic import Field

from alignkit.config import StrictModel
from alignkit.data.batching import by_completion, collate
from alignkit.data.length_balance import DEFAULT_EDGES, balance_by_length, check_edges
from alignkit.errors import DataError
from alignkit.train.loop import TrainConfig, Trainer
from alignkit.train.reward_eval import evaluate_pairs
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


class RMDataConfig(DataConfig):
    """Preference pairs, optional unpaired correctness rows, and length balancing."""

    balance_length: Literal["none", "bucket"] = "none"
    """bucket: subsample training pairs so longer-wins and shorter-wins are equally frequent in each
    length-difference bucket (ChatGLM-RLHF); none: use every pair."""
    length_buckets: list[int] = Field(default_factory=lambda: list(DEFAULT_EDGES))
    """Edges of the |len(chosen) - len(rejected)| buckets in tokens, for balancing and evaluation."""
    unpaired: str | None = None
    """Unpaired rows {prompt, completion, label: bool} for the multi-task BCE term (null: BT only)."""


class RMConfig(StrictModel):
    """``alignkit rm`` recipe. Rows: prompt/chosen/rejected (explicit or implicit prompt)."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    data: RMDataConfig
    margin: float | None = None
    """Constant margin m in the Bradley-Terry loss (null: none)."""
    unpaired_weight: float = 1.0
    """alpha: weight of the BCE term on data.unpaired rows (multi-task reward model)."""
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
    """Bradley-Terry on the pairs of a batch, plus alpha x BCE on its unpaired rows (``u_*`` keys)."""

    def __init__(self, margin: float | None, alpha: float = 1.0):
        self.margin, self.alpha = margin, alpha

    def units(self, batch):
        return int(batch["index"].numel()) + int(batch["u_index"].numel() if "u_index" in batch else 0)

    def __call__(self, model, batch):
        from alignkit.losses import bradley_terry_loss, multitask_reward_loss

        if batch["input_ids"].shape[0]:
            r = by_completion(model(batch["input_ids"], batch["attention_mask"]), 2)
        else:  # a micro-batch of unpaired rows only
            r = torch.zeros((0, 2), device=batch["input_ids"].device)
        margin = None if self.margin is None else torch.full_like(r[:, 0], self.margin)
        if "u_index" not in batch:
            loss, metrics = bradley_terry_loss(r[:, 0], r[:, 1], margin=margin)
            return loss.sum(), metrics
        u = model(batch["u_input_ids"], batch["u_attention_mask"])
        loss, metrics = multitask_reward_loss(r[:, 0], r[:, 1], u, batch["u_labels"], self.alpha, margin=margin)
        return loss.sum(), metrics


def collate_mixed(examples, pad_id: int) -> dict[str, torch.Tensor]:
    """Pairs (2 completions) and unpaired rows (1 completion, label in ``rewards``) of one batch.

    Pairs use the usual keys; unpaired rows get ``u_input_ids``, ``u_attention_mask``, ``u_index``
    and ``u_labels``. A batch with no pair gets empty ``(0, 1)`` pair tensors.
    """
    pairs = [e for e in examples if len(e.completion_ids) == 2]
    single = [e for e in examples if len(e.completion_ids) == 1]
    if pairs:
        batch = collate(pairs, pad_id)
    else:
        batch = {"input_ids": torch.zeros((0, 1), dtype=torch.long), "attention_mask": torch.ones((0, 1), dtype=torch.long),
                 "index": torch.zeros(0, dtype=torch.long)}
    if single:
        u = collate([dataclasses.replace(e, rewards=None) for e in single], pad_id)
        batch.update(u_input_ids=u["input_ids"], u_attention_mask=u["attention_mask"], u_index=u["index"],
                     u_labels=torch.tensor([e.rewards[0] for e in single], dtype=torch.float32))
    return batch


def load_unpaired(path: str, tokenizer, policy) -> tuple[list, dict[str, Any]]:
    """Tokenised unpaired rows whose label rides in ``rewards`` (for :func:`collate_mixed`)."""
    from alignkit.data.rows import read_rows
    from alignkit.data.tokenize import tokenize_examples
    from alignkit.errors import DataError

    rows = read_rows(path, "unpaired")
    label = {r.index: r.labels[0] for r in rows}
    tokenized, summary = tokenize_examples(rows, tokenizer, policy)
    if not tokenized:
        raise DataError(f"{path}: no unpaired rows left after the data policy ({summary.as_dict()})")
    return [dataclasses.replace(t, rewards=[label[t.index]]) for t in tokenized], summary.as_dict()


def balance_train_pairs(train: list, data: RMDataConfig, seed: int) -> tuple[list, dict[str, Any] | None]:
    """Apply ``data.balance_length`` to tokenised training pairs; returns (pairs, report or None)."""
    check_edges(data.length_buckets)
    if data.balance_length == "none":
        return train, None
    keep, report = balance_by_length([(len(e.completion_ids[0]), len(e.completion_ids[1])) for e in train],
                                     data.length_buckets, seed)
    return [train[i] for i in keep], report


def load_trainable_reward_model(model_cfg: ModelConfig, seed: int):
    """``(model, tokenizer)``: the trainable scalar-head model (``load_policy(head="reward")``) with a
    tokenizer that pads with a token other than EOS (shared by ``alignkit rm`` and ``alignkit prm``)."""
    from alignkit.models import load_tokenizer

    tok = load_tokenizer(model_cfg.name_or_path)
    distinct_pad(tok)
    model, tok = load_policy(model_cfg, seed, head="reward", tokenizer=tok)
    model.config.pad_token_id = tok.pad_token_id
    return model, tok


def train_rm(cfg: RMConfig, resume: bool = False) -> dict[str, Any]:
    from alignkit.train.checkpoint import export_model

    prec = resolve_run_precision(cfg.train.precision)
    acc = make_accelerator(prec.precision)
    seed_everything(cfg.train.seed)
    model, tok = load_trainable_reward_model(cfg.model, cfg.train.seed)
    train, evals, summary = load_data(cfg.data, "preference", tok, cfg.train.seed, pairwise=True)
    train, balance = balance_train_pairs(train, cfg.data, cfg.train.seed)
    if not train:
        raise DataError(f"{cfg.data.train}: length balancing kept no pairs ({balance})")
    unpaired, unpaired_summary = load_unpaired(cfg.data.unpaired, tok, cfg.data.limits) if cfg.data.unpaired else ([], None)
    out = prepare_output(acc, cfg, cfg.train.output_dir)  # only once the data is known to be valid
    fwd = RewardForward(model.to(acc.device))
    evaluate = (lambda m: evaluate_pairs(acc.unwrap_model(m), evals, tok.pad_token_id, cfg.train.batch_size,
                                         acc.device, cfg.data.length_buckets)) if evals else None
    before = evaluate(fwd) if evaluate else {}
    trainer = Trainer(cfg.train, acc, fwd, train + unpaired, RMObjective(cfg.margin, cfg.unpaired_weight),
                      lambda exs: collate_mixed(exs, tok.pad_token_id),
                      run_state={"data": summary.as_dict()}, evaluate=evaluate)
    result = trainer.train(resume=resume)
    after = {}
    if not result.interrupted:
        export_model(acc, trainer.model, tok, out,
                     merge_lora=cfg.model.lora.merge_on_save if cfg.model.lora else True)
        after = evaluate(trainer.model) if evaluate else {}
    payload = {"recipe": "rm", "precision": prec.as_dict(), "steps": result.step, "interrupted": result.interrupted,
               "signal": result.signal, "data": summary.as_dict(), "balance": balance, "unpaired": unpaired_summary,
               "train_pairs": len(train), "eval_before": before, "eval_after": after,
               "final_loss": result.history[-1]["loss"] if result.history else None, "output_dir": str(out)}
    write_summary(acc, out, payload)
    return payload
