"""Preference optimisation: ``alignkit dpo`` (losses dpo | ipo | exo_pair | exo | dpo_rw).

Reads top to bottom: config → data → reference log-probs (cached) → loop → export → evaluation.
Pair rows (prompt/chosen/rejected) train dpo, ipo and exo_pair; K-way rows
(prompt/completions/rewards) train exo and dpo_rw. exo and dpo_rw on pair rows use the
preference setting of the EXO paper (hard labels; METHODS §2.3 item 3, §2.4).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar, Literal

import torch
from pydantic import Field, model_validator

from alignkit.config import StrictModel
from alignkit.data.batching import by_completion, collate
from alignkit.data.rows import DataError
from alignkit.data.tokenize import TokenizedExample
from alignkit.train.loop import TrainConfig, Trainer, epoch_micro_batches
from alignkit.train.run import (
    DataConfig,
    LogpsForward,
    ModelConfig,
    load_data,
    load_policy,
    make_accelerator,
    prepare_output,
    resolve_run_precision,
    seed_everything,
    write_summary,
)


class _Loss(StrictModel):
    kway: ClassVar[bool] = False  # whether the loss takes K-way rows (not a config field)

    def needs_reference(self) -> bool:
        return True


class DPOLoss(_Loss):
    """Sigmoid DPO (Rafailov et al. 2023); label_smoothing > 0 is conservative DPO."""

    type: Literal["dpo"] = "dpo"
    beta: float = 0.1
    """KL coefficient: L = -log sigma(beta * h), h = policy/reference log-ratio margin."""
    label_smoothing: float = 0.0
    """Probability that a label is flipped (cDPO); 0 is plain DPO."""


class IPOLoss(_Loss):
    """IPO (Azar et al. 2023): squared distance of the log-ratio margin to 1/(2 tau)."""

    type: Literal["ipo"] = "ipo"
    tau: float = 0.1
    """Regularisation: L = (h - 1/(2 tau))^2."""
    length_normalize: bool = True
    """Use per-token mean log-probs (as TRL does for IPO, following the IPO authors); false: sums."""


class EXOPairLoss(_Loss):
    """EXO pairwise closed form (Ji et al. 2024, eq. 16; TRL's exo_pair)."""

    type: Literal["exo_pair"] = "exo_pair"
    beta: float = 0.1
    """Policy coefficient on the log-ratio margin."""
    eps: float = 1e-3
    """Target probability of the rejected response (TRL 1e-3; official code ~4.54e-5 = sigmoid(-10))."""


class EXOLoss(_Loss):
    """Exact EXO over K candidates: reverse KL(p_policy || p_reward) (METHODS §2.3)."""

    type: Literal["exo"] = "exo"
    beta_pi: float = 0.5
    """Policy coefficient: p_policy = softmax(beta_pi * log-ratio). Effective KL coefficient = beta_pi * beta_r."""
    beta_r: float = 0.5
    """Reward temperature: p_reward = softmax(rewards / beta_r) (unused for pair rows: targets [0, -10])."""
    kway: ClassVar[bool] = True


class DPORWLoss(_Loss):
    """DPO over K candidates with reward soft labels: forward KL / cross-entropy (METHODS §2.4)."""

    type: Literal["dpo_rw"] = "dpo_rw"
    beta_pi: float = 0.5
    """Policy coefficient: p_policy = softmax(beta_pi * log-ratio)."""
    beta_r: float = 0.5
    """Reward temperature: q = softmax(rewards / beta_r) (pair rows: hard labels [1, 0])."""
    kway: ClassVar[bool] = True


LossConfig = Annotated[DPOLoss | IPOLoss | EXOPairLoss | EXOLoss | DPORWLoss, Field(discriminator="type")]


class ReferenceConfig(StrictModel):
    """The frozen reference policy."""

    name_or_path: str | None = None
    """null: the policy's initial weights (no second model is loaded when the cache is warm)."""
    cache: bool = True
    """Persist reference log-probs under $ALIGNKIT_HOME/refcache keyed by a fingerprint."""


class PreferenceConfig(StrictModel):
    """``alignkit dpo`` recipe."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    reference: ReferenceConfig = Field(default_factory=ReferenceConfig)
    data: DataConfig
    loss: LossConfig = Field(default_factory=DPOLoss)
    nll_weight: float = 0.0
    """Weight of the auxiliary per-token NLL on the chosen (best-reward) completion (LongReward, ChatGLM-Math)."""
    logit_temperature: float = 1.0
    """Divide policy and reference logits by T before log-softmax (EXO's code samples and trains at T=0.8)."""
    train: TrainConfig = Field(default_factory=TrainConfig)

    @model_validator(mode="before")
    @classmethod
    def _default_loss_type(cls, data: Any) -> Any:
        # `loss.beta=0.2` alone means the default loss (dpo), as it would without the union.
        if isinstance(data, dict) and isinstance(data.get("loss"), dict) and "type" not in data["loss"]:
            data = {**data, "loss": {"type": "dpo", **data["loss"]}}
        return data


def _pair_loss(loss, pol: torch.Tensor, ref: torch.Tensor, cnt: torch.Tensor):
    """Dispatch to the pure loss functions; ``pol``/``ref``/``cnt`` are (B, 2), chosen first."""
    from alignkit.losses import preference as L

    if isinstance(loss, IPOLoss) and loss.length_normalize:
        pol, ref = pol / cnt, ref / cnt
    if isinstance(loss, DPOLoss):
        return L.dpo_loss(pol[:, 0], pol[:, 1], ref[:, 0], ref[:, 1], beta=loss.beta,
                          label_smoothing=loss.label_smoothing)
    if isinstance(loss, IPOLoss):
        return L.ipo_loss(pol[:, 0], pol[:, 1], ref[:, 0], ref[:, 1], tau=loss.tau)
    if isinstance(loss, EXOPairLoss):
        return L.exo_pair_loss(pol[:, 0], pol[:, 1], ref[:, 0], ref[:, 1], beta=loss.beta, eps=loss.eps)
    raise TypeError(loss)


class PreferenceObjective:
    """Loss sum over the prompts of a micro-batch (units = prompts)."""

    def __init__(self, cfg: PreferenceConfig, n_comp: int, pairs: bool):
        self.cfg, self.n_comp, self.pairs = cfg, n_comp, pairs

    def units(self, batch: dict[str, torch.Tensor]) -> int:
        return int(batch["index"].numel())

    def __call__(self, model, batch):
        from alignkit.losses import preference as L

        logps, counts = model(batch["input_ids"], batch["attention_mask"], batch["loss_mask"])
        pol = by_completion(logps.float(), self.n_comp)
        cnt = by_completion(counts, self.n_comp)
        ref = batch["ref_logps"]
        loss = self.cfg.loss
        if not loss.kway:
            per_ex, metrics = _pair_loss(loss, pol, ref, cnt.clamp(min=1).to(pol.dtype))
            best = torch.zeros(pol.shape[0], dtype=torch.long, device=pol.device)
        else:
            fn = L.exo_loss if isinstance(loss, EXOLoss) else L.dpo_rw_loss
            if self.pairs:
                # Preference setting: EXO's official [0, -10] log-targets; DPO-pref's hard labels [1, 0].
                log_eps = -10.0 if isinstance(loss, EXOLoss) else float("-inf")
                targets = L.pref_log_targets(pol.shape[0], log_eps, device=pol.device)
                per_ex, metrics = fn(pol, ref, beta_pi=loss.beta_pi, beta_r=loss.beta_r, log_targets=targets)
                best = torch.zeros(pol.shape[0], dtype=torch.long, device=pol.device)
            else:
                rewards = batch["rewards"]
                per_ex, metrics = fn(pol, ref, rewards, beta_pi=loss.beta_pi, beta_r=loss.beta_r)
                best = rewards.argmax(dim=1)
        total = per_ex.sum()
        if self.cfg.nll_weight:
            rows = torch.arange(pol.shape[0], device=pol.device)
            nll, _ = L.chosen_nll_loss(pol[rows, best], cnt[rows, best])
            total = total + self.cfg.nll_weight * nll.sum()
            metrics = {**metrics, "nll/chosen": nll.detach()}
        return total, metrics


def _with_reference(examples: list[TokenizedExample], ref: torch.Tensor, pad_id: int):
    pos = {id(ex): i for i, ex in enumerate(examples)}

    def collate_fn(batch_examples: list[TokenizedExample]) -> dict[str, torch.Tensor]:
        batch = collate(batch_examples, pad_id)
        batch["ref_logps"] = ref[[pos[id(ex)] for ex in batch_examples]]
        return batch

    return collate_fn


def _detect_kind(path: str) -> str:
    """K-way rows carry 'completions'; pair rows carry 'chosen'."""
    from pathlib import Path

    from alignkit.data.rows import _iter_records

    for _, rec in _iter_records(Path(path)):
        return "kway" if isinstance(rec, dict) and "completions" in rec else "preference"
    raise DataError(f"{path}: no rows")


@torch.no_grad()
def evaluate_pairs(model: LogpsForward, examples: list[TokenizedExample], ref: torch.Tensor, pad_id: int,
                   batch_size: int, device) -> dict[str, float]:
    """Held-out preference metrics for pair-shaped data (first completion preferred).

    * ``pref_acc_logp``: the policy gives the preferred completion a higher mean per-token log-prob;
    * ``reward_acc`` / ``reward_margin``: the implicit reward ``logp - logp_ref`` prefers it.
    """
    was = model.training
    model.eval()
    wins_lp, wins_r, margins = [], [], []
    for i in range(0, len(examples), batch_size):
        chunk = examples[i : i + batch_size]
        b = collate(chunk, pad_id)
        lp, cnt = model(b["input_ids"].to(device), b["attention_mask"].to(device), b["loss_mask"].to(device))
        n_comp = len(chunk[0].completion_ids)
        lp, cnt = by_completion(lp.float().cpu(), n_comp), by_completion(cnt.cpu(), n_comp)
        best = torch.tensor([0 if c.rewards is None else max(range(n_comp), key=lambda k: c.rewards[k])
                             for c in chunk])
        worst = torch.tensor([1 if c.rewards is None else min(range(n_comp), key=lambda k: c.rewards[k])
                              for c in chunk])
        rows = torch.arange(len(chunk))
        mean_lp = lp / cnt.clamp(min=1)
        wins_lp.append((mean_lp[rows, best] > mean_lp[rows, worst]).float())
        r = lp - ref[i : i + batch_size]
        m = r[rows, best] - r[rows, worst]
        wins_r.append((m > 0).float())
        margins.append(m)
    model.train(was)
    if not examples:
        return {}
    return {
        "pref_acc_logp": float(torch.cat(wins_lp).mean()),
        "reward_acc": float(torch.cat(wins_r).mean()),
        "reward_margin": float(torch.cat(margins).mean()),
        "n": len(examples),
    }


def train_preference(cfg: PreferenceConfig, resume: bool = False) -> dict[str, Any]:
    """Run the recipe; returns the run summary (also written to ``output_dir/summary.json``)."""
    from alignkit.train import refcache
    from alignkit.train.checkpoint import export_model

    prec = resolve_run_precision(cfg.train.precision)
    acc = make_accelerator(prec.precision)
    seed_everything(cfg.train.seed)
    kind = _detect_kind(cfg.data.train)
    if kind == "kway" and not cfg.loss.kway:
        raise DataError(f"{cfg.data.train}: K-way rows need loss exo or dpo_rw (got {cfg.loss.type})")
    pairs = kind == "preference"
    model, tok = load_policy(cfg.model, cfg.train.seed)
    train, evals, summary = load_data(cfg.data, kind, tok, cfg.train.seed, pairwise=pairs)
    out = prepare_output(acc, cfg, cfg.train.output_dir)  # only once the data is known to be valid

    # Reference log-probs: from the cache, or computed once from the reference weights.
    ref_model = model
    if cfg.reference.name_or_path is not None:
        from alignkit.models import load_causal_lm

        ref_model = load_causal_lm(cfg.reference.name_or_path).to(acc.device)
    ref_kw = dict(batch_size=max(1, cfg.train.batch_size), temperature=cfg.logit_temperature,
                  precision=prec.precision, device=acc.device, accelerator=acc,
                  use_cache=cfg.reference.cache, progress=cfg.train.progress and acc.is_main_process)
    model.to(acc.device)
    # Same micro-batches as training / evaluation, so bf16 rounding matches the policy's at init.
    train_batches = epoch_micro_batches(len(train), cfg.train.batch_size, cfg.train.grad_accum,
                                        acc.num_processes, cfg.train.seed)
    eval_batches = [list(range(i, min(i + cfg.train.batch_size, len(evals))))
                    for i in range(0, len(evals), cfg.train.batch_size)]
    ref_train, ref_info = refcache.load_or_compute(ref_model, tok, train, batches=train_batches, **ref_kw)
    ref_eval = refcache.load_or_compute(ref_model, tok, evals, batches=eval_batches, **ref_kw)[0] if evals else None
    del ref_model

    fwd = LogpsForward(model, temperature=cfg.logit_temperature)
    before = evaluate_pairs(fwd, evals, ref_eval, tok.pad_token_id, cfg.train.batch_size, acc.device) if evals else {}
    objective = PreferenceObjective(cfg, len(train[0].completion_ids), pairs)
    trainer = Trainer(cfg.train, acc, fwd, train, objective, _with_reference(train, ref_train, tok.pad_token_id),
                      run_state={"data": summary.as_dict()},
                      evaluate=(lambda m: evaluate_pairs(acc.unwrap_model(m), evals, ref_eval, tok.pad_token_id,
                                                         cfg.train.batch_size, acc.device)) if evals else None)
    result = trainer.train(resume=resume)
    after = {}
    if not result.interrupted:
        export_model(acc, trainer.model, tok, out,
                     merge_lora=cfg.model.lora.merge_on_save if cfg.model.lora else True)
        if evals:
            after = evaluate_pairs(acc.unwrap_model(trainer.model), evals, ref_eval, tok.pad_token_id,
                                   cfg.train.batch_size, acc.device)
    payload = {
        "recipe": "dpo", "precision": prec.as_dict(), "loss": cfg.loss.type, "steps": result.step, "interrupted": result.interrupted,
        "signal": result.signal, "data": summary.as_dict(), "reference_cache": ref_info,
        "eval_before": before, "eval_after": after,
        "final_loss": result.history[-1]["loss"] if result.history else math.nan,
        "output_dir": str(out),
    }
    write_summary(acc, out, payload)
    return payload
