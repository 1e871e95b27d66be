"""Preference optimisation: ``alignkit dpo`` (losses dpo | ipo | exo_pair | exo | dpo_rw).

Reads top to bottom: config → data → reference log-probs (cached) → loop → export → evaluation.
Pair rows (prompt/chosen/rejected) train dpo, ipo and exo_pair; K-way rows
(prompt/completions/rewards) train exo and dpo_rw. exo and dpo_rw on pair rows use the
preference setting of the EXO paper (hard labels; METHODS §2.3 item 3, §2.4).
"""

from __future__ import annotations

import math
import typing
from typing import Annotated, Any, ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor

from alignkit.config import StrictModel
from alignkit.data.batching import collate, collate_segments
from alignkit.data.tokenize import TokenizedExample
from alignkit.errors import ConfigError, DataError
from alignkit.losses import preference as L
from alignkit.train.loop import TrainConfig, Trainer, epoch_micro_batches
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


class _Loss(StrictModel):
    """A preference loss config; it owns its dispatch (which rows, whether a reference, which function)."""

    rows: ClassVar[frozenset[str]] = frozenset({"preference"})
    """Row kinds the loss trains on: "preference" (prompt/chosen/rejected) and/or "kway"."""

    def needs_reference(self) -> bool:
        """Whether the loss compares the policy with a frozen reference (all shipped losses do)."""
        return True

    def compute(self, pol: Tensor, ref: Tensor, cnt: Tensor, rewards: Tensor | None, valid: Tensor):
        """``(B, C)`` summed log-probs, reference, token counts, rewards (None: preference rows, first
        preferred) and real-candidate mask -> (per-example loss (B,), metrics, index of the best candidate)."""
        raise NotImplementedError


class _PairLoss(_Loss):
    def compute(self, pol, ref, cnt, rewards, valid):
        best = torch.zeros(pol.shape[0], dtype=torch.long, device=pol.device)
        return (*self.pair_loss(pol[:, 0], pol[:, 1], ref[:, 0], ref[:, 1], cnt), best)


class DPOLoss(_PairLoss):
    """Sigmoid DPO (Rafailov et al. 2023); label_smoothing > 0 is conservative DPO."""

    type: Literal["dpo"] = "dpo"
    beta: float = 0.1
    """KL coefficient: L = -log sigma(beta * h), h = policy/reference log-ratio margin."""
    label_smoothing: float = 0.0
    """Probability that a label is flipped (cDPO); 0 is plain DPO."""

    def pair_loss(self, pc, pr, rc, rr, cnt):
        return L.dpo_loss(pc, pr, rc, rr, beta=self.beta, label_smoothing=self.label_smoothing)


class IPOLoss(_PairLoss):
    """IPO (Azar et al. 2023): squared distance of the log-ratio margin to 1/(2 tau)."""

    type: Literal["ipo"] = "ipo"
    tau: float = 0.1
    """Regularisation: L = (h - 1/(2 tau))^2."""
    length_normalize: bool = True
    """Use per-token mean log-probs (as TRL does for IPO, following the IPO authors); false: sums."""

    def pair_loss(self, pc, pr, rc, rr, cnt):
        if self.length_normalize:
            n = cnt.clamp(min=1).to(pc.dtype)
            pc, pr, rc, rr = pc / n[:, 0], pr / n[:, 1], rc / n[:, 0], rr / n[:, 1]
        return L.ipo_loss(pc, pr, rc, rr, tau=self.tau)


class EXOPairLoss(_PairLoss):
    """EXO pairwise closed form (Ji et al. 2024, eq. 16; TRL's exo_pair)."""

    type: Literal["exo_pair"] = "exo_pair"
    beta: float = 0.1
    """Policy coefficient on the log-ratio margin."""
    eps: float = 1e-3
    """Target probability of the rejected response (TRL 1e-3; official code ~4.54e-5 = sigmoid(-10))."""

    def pair_loss(self, pc, pr, rc, rr, cnt):
        return L.exo_pair_loss(pc, pr, rc, rr, beta=self.beta, eps=self.eps)


class _KWayLoss(_Loss):
    rows: ClassVar[frozenset[str]] = frozenset({"preference", "kway"})
    pref_log_epsilon: ClassVar[float]  # log-target of the rejected response on preference rows

    def compute(self, pol, ref, cnt, rewards, valid):
        kw = dict(beta_pi=self.beta_pi, beta_r=self.beta_r, valid=valid)
        if rewards is None:  # preference setting (METHODS §2.3 item 3): targets [0, log_epsilon]
            targets = L.pref_log_targets(pol.shape[0], self.pref_log_epsilon, device=pol.device)
            per_ex, metrics = self.fn(pol, ref, log_targets=targets, **kw)
            return per_ex, metrics, torch.zeros(pol.shape[0], dtype=torch.long, device=pol.device)
        per_ex, metrics = self.fn(pol, ref, rewards, **kw)
        return per_ex, metrics, rewards.masked_fill(~valid, -math.inf).argmax(dim=1)


class EXOLoss(_KWayLoss):
    """Exact EXO over K candidates: reverse KL(p_policy || p_reward) (METHODS §2.3)."""

    type: Literal["exo"] = "exo"
    beta_pi: float = 0.5
    """Policy coefficient: p_policy = softmax(beta_pi * log-ratio). Effective KL coefficient = beta_pi * beta_r."""
    beta_r: float = 0.5
    """Reward temperature: p_reward = softmax(rewards / beta_r) (pair rows have fixed targets [0, -10]: setting beta_r with them is an error)."""
    pref_log_epsilon: ClassVar[float] = -10.0  # EXO's official exo-pref targets

    @staticmethod
    def fn(*args, **kw):
        return L.exo_loss(*args, **kw)


class DPORWLoss(_KWayLoss):
    """DPO over K candidates with reward soft labels: forward KL / cross-entropy (METHODS §2.4)."""

    type: Literal["dpo_rw"] = "dpo_rw"
    beta_pi: float = 0.5
    """Policy coefficient: p_policy = softmax(beta_pi * log-ratio)."""
    beta_r: float = 0.5
    """Reward temperature: q = softmax(rewards / beta_r) (pair rows have hard labels [1, 0]: setting beta_r with them is an error)."""
    pref_log_epsilon: ClassVar[float] = -math.inf  # dpo-pref's hard labels [1, 0]

    @staticmethod
    def fn(*args, **kw):
        return L.dpo_rw_loss(*args, **kw)


LossConfig = Annotated[DPOLoss | IPOLoss | EXOPairLoss | EXOLoss | DPORWLoss, Field(discriminator="type")]


class ReferenceConfig(StrictModel):
    """The frozen reference policy."""

    name_or_path: str | None = None
    """null: the policy's initial weights (no second model is loaded when the cache is warm)."""
    cache: bool = True
    """Persist reference log-probs under $ALIGNKIT_HOME/refcache keyed by a fingerprint."""


class BatchingConfig(StrictModel):
    """How completions are laid out for the forward pass (same log-probs either way; speed differs)."""

    shared_prompt: bool = True
    """Score a prompt's completions in one sequence [prompt, c1, ..., cK]: the prompt is computed once, not K times."""
    pack: bool = True
    """Padding-free: several prompts' sequences share a row (block-diagonal attention), so rows are not padded to the longest."""


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
    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    @model_validator(mode="before")
    @classmethod
    def _default_loss_type(cls, data: Any) -> Any:
        # `loss.beta=0.2` alone means the default loss (dpo), as it would without the union.
        if isinstance(data, dict) and isinstance(data.get("loss"), dict) and "type" not in data["loss"]:
            data = {**data, "loss": {"type": "dpo", **data["loss"]}}
        return data


def make_collate(batching: BatchingConfig, pad_id: int, n_comp: int):
    """The batch builder for policy, reference and evaluation passes (one layout for all three)."""
    if not (batching.shared_prompt or batching.pack):
        return lambda exs: collate(exs, pad_id, n_comp=n_comp)
    return lambda exs: collate_segments(exs, pad_id, shared_prompt=batching.shared_prompt, pack=batching.pack,
                                        n_comp=n_comp)


class PreferenceObjective:
    """Loss sum over the prompts of a micro-batch (units = prompts)."""

    def __init__(self, cfg: PreferenceConfig, pairs: bool):
        self.cfg, self.pairs = cfg, pairs

    def units(self, batch: dict[str, Tensor]) -> int:
        return int(batch["index"].numel())

    def __call__(self, model, batch):
        pol, cnt = forward_logps(model, batch)
        rewards = None if self.pairs else batch["rewards"]
        per_ex, metrics, best = self.cfg.loss.compute(pol, batch["ref_logps"], cnt, rewards, batch["valid"])
        total = per_ex.sum()
        if self.cfg.nll_weight:
            rows = torch.arange(pol.shape[0], device=pol.device)
            nll, _ = L.chosen_nll_loss(pol[rows, best], cnt[rows, best])
            total = total + self.cfg.nll_weight * nll.sum()
            metrics = {**metrics, "nll/chosen": nll.detach()}
        return total, metrics


def _with_reference(examples: list[TokenizedExample], ref: Tensor, collate_fn):
    pos = {id(ex): i for i, ex in enumerate(examples)}

    def with_ref(batch_examples: list[TokenizedExample]) -> dict[str, Tensor]:
        batch = collate_fn(batch_examples)
        batch["ref_logps"] = ref[[pos[id(ex)] for ex in batch_examples]]
        return batch

    return with_ref


def _detect_kind(path: str) -> str:
    """K-way rows carry 'completions'; pair rows carry 'chosen'."""

    from alignkit.data.records import iter_records

    for rec in iter_records(path):
        return "kway" if isinstance(rec.value, dict) and "completions" in rec.value else "preference"
    raise DataError(f"{path}: no rows")


def kway_padding(examples: list[TokenizedExample], n_comp: int) -> dict[str, int]:
    """Rows with fewer than ``n_comp`` completions are padded with masked candidates; counted for the summary."""
    short = [n_comp - len(ex.completion_ids) for ex in examples if len(ex.completion_ids) < n_comp]
    return {"k_max": n_comp, "rows_padded": len(short), "masked_candidates": sum(short)}


@torch.no_grad()
def evaluate_pairs(model: LogpsForward, examples: list[TokenizedExample], ref: Tensor, collate_fn,
                   batch_size: int, device) -> dict[str, float]:
    """Held-out preference metrics (first completion preferred, or best vs worst reward).

    * ``pref_acc_logp``: the policy gives the preferred completion a higher mean per-token log-prob;
    * ``reward_acc`` / ``reward_margin``: the implicit reward ``logp - logp_ref`` prefers it.
    """
    was = model.training
    model.eval()
    wins_lp, wins_r, margins = [], [], []
    for i in range(0, len(examples), batch_size):
        b = {k: v.to(device) for k, v in collate_fn(examples[i : i + batch_size]).items()}
        lp, cnt = (t.cpu() for t in forward_logps(model, b))
        valid = b["valid"].cpu()
        if "rewards" in b:
            r = b["rewards"].cpu()
            best, worst = r.masked_fill(~valid, -math.inf).argmax(1), r.masked_fill(~valid, math.inf).argmin(1)
        else:
            best, worst = torch.zeros(len(lp), dtype=torch.long), torch.ones(len(lp), dtype=torch.long)
        rows = torch.arange(len(lp))
        mean_lp = lp / cnt.clamp(min=1)
        wins_lp.append((mean_lp[rows, best] > mean_lp[rows, worst]).float())
        implicit = lp - ref[i : i + batch_size]
        m = implicit[rows, best] - implicit[rows, worst]
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
    from alignkit.train.inloop_eval import finish, hf_evals

    prec = resolve_run_precision(cfg.train.precision)
    acc = make_accelerator(prec.precision)
    seed_everything(cfg.train.seed)
    kind = _detect_kind(cfg.data.train)
    if kind not in cfg.loss.rows:
        takers = [c.model_fields["type"].default for c in typing.get_args(LossConfig.__origin__) if kind in c.rows]
        raise DataError(f"{cfg.data.train}: {'K-way' if kind == 'kway' else 'pair'} rows need loss "
                        f"{' or '.join(takers)} (got {cfg.loss.type})")
    pairs = kind == "preference"
    if pairs and "kway" in cfg.loss.rows and "beta_r" in cfg.loss.model_fields_set:
        # Pair rows carry no rewards: the targets are fixed, so a beta_r would be silently ignored.
        raise ConfigError(
            f"loss.beta_r={cfg.loss.beta_r} has no effect on pair rows ({cfg.data.train}: prompt/chosen/"
            f"rejected, fixed targets); remove loss.beta_r or train on K-way rows with rewards"
        )
    model, tok = load_policy(cfg.model, cfg.train.seed)
    train, evals, summary = load_data(cfg.data, kind, tok, cfg.train.seed, pairwise=pairs)
    inloop = hf_evals(cfg.train, acc, tok)  # reads and checks the train.eval files before anything is written
    out = prepare_output(acc, cfg, cfg.train.output_dir)  # only once the data is known to be valid
    n_comp = max(len(ex.completion_ids) for ex in train + evals)
    collate_fn = make_collate(cfg.batching, tok.pad_token_id, n_comp)

    # Reference log-probs: from the cache, or computed once from the reference weights.
    ref_model = model
    if cfg.reference.name_or_path is not None and cfg.loss.needs_reference():
        from alignkit.models import load_causal_lm

        ref_model = load_causal_lm(cfg.reference.name_or_path).to(acc.device)
    ref_kw = dict(batch_size=max(1, cfg.train.batch_size), temperature=cfg.logit_temperature,
                  precision=prec.precision, device=acc.device, accelerator=acc,
                  use_cache=cfg.reference.cache, progress=cfg.train.progress and acc.is_main_process,
                  collate_fn=collate_fn, layout=cfg.batching.model_dump())
    model.to(acc.device)
    # Same micro-batches as training / evaluation, so bf16 rounding matches the policy's at init.
    train_batches = epoch_micro_batches(len(train), cfg.train.batch_size, cfg.train.grad_accum,
                                        acc.num_processes, cfg.train.seed)
    eval_batches = [list(range(i, min(i + cfg.train.batch_size, len(evals))))
                    for i in range(0, len(evals), cfg.train.batch_size)]
    if cfg.loss.needs_reference():
        ref_train, ref_info = refcache.load_or_compute(ref_model, tok, train, batches=train_batches, **ref_kw)
        ref_eval = refcache.load_or_compute(ref_model, tok, evals, batches=eval_batches, **ref_kw)[0] if evals else None
    else:  # reference-free: the "log-ratio" is the policy's log-prob itself
        ref_train, ref_info = torch.zeros(len(train), n_comp), {"hit": None, "reference": "none"}
        ref_eval = torch.zeros(len(evals), n_comp)
    del ref_model

    fwd = LogpsForward(model, temperature=cfg.logit_temperature)

    def evaluate(m):
        # under the training precision, as the reference's eval log-probs were: in bf16 an fp32 policy pass
        # against a bf16 reference showed a nonzero implicit reward margin at step 0 (policy == reference)
        with acc.autocast():
            return evaluate_pairs(acc.unwrap_model(m), evals, ref_eval, collate_fn, cfg.train.batch_size, acc.device)

    before = evaluate(fwd) if evals else {}
    trainer = Trainer(cfg.train, acc, fwd, train, PreferenceObjective(cfg, pairs),
                      _with_reference(train, ref_train, collate_fn), run_state={"data": summary.as_dict()},
                      evaluate=evaluate if evals else None,
                      evals=(lambda m: inloop(acc.unwrap_model(m).model)) if inloop else None)
    result = trainer.train(resume=resume)
    after = {}
    if not result.interrupted:
        export_model(acc, trainer.model, tok, out,
                     merge_lora=cfg.model.lora.merge_on_save if cfg.model.lora else True)
        after = evaluate(trainer.model) if evals else {}
    payload = {
        "recipe": "dpo", "precision": prec.as_dict(), "loss": cfg.loss.type, "steps": result.step,
        "interrupted": result.interrupted, "signal": result.signal, "data": summary.as_dict(),
        "batching": cfg.batching.model_dump(), "reference_cache": ref_info,
        "eval_before": before, "eval_after": after,
        "final_loss": result.history[-1]["loss"] if result.history else math.nan,
        "output_dir": str(out),
    }
    if not pairs:
        payload["kway_padding"] = kway_padding(train, n_comp)
    finish(inloop, out, payload, acc.is_main_process)
    write_summary(acc, out, payload)
    return payload
