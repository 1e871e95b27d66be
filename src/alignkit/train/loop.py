"""The one training loop every recipe uses.

Step, accumulate, clip, schedule, log, checkpoint, resume. Recipes supply an :class:`Objective`
that says how many normalisation *units* a micro-batch holds (tokens for SFT, pairs or prompts
for preference losses) and returns the **sum** of the per-unit losses. The loop divides by the
unit count of the whole optimizer step, summed over every micro-batch and every process, so

    loss = (1 / N_global) * sum over all units in the global batch

whatever the split into micro-batches or processes (batch 8 x 1 == 1 x 8 == 2 processes x 4).
Averaging per micro-batch and then over micro-batches — what a naive loop does — weights a
token in a short micro-batch more than one in a long micro-batch.
"""

from __future__ import annotations

import math
import signal
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from pydantic import Field, field_validator, model_validator

from alignkit.config import Precision, Renamed, StrictModel
from alignkit.data.tokenize import TokenizedExample
from alignkit.errors import ConfigError
from alignkit.progress import ProgressBar
from alignkit.train import checkpoint as ckpt
from alignkit.train.inloop_eval import EvalItem, check_items
from alignkit.train.trackers import TrackerName, Trackers, check_installed, log_metrics


class TrainConfig(StrictModel):
    """Optimisation and bookkeeping shared by every recipe."""

    output_dir: str = "runs/out"
    """Where checkpoints, logs, the resolved config and the final model go."""
    seed: int = 42
    """Seeds data order, initialisation of new heads and dropout."""
    epochs: int | None = Field(default=None, ge=1)
    """Passes over the training data (null: 1 unless ``max_steps`` is set; setting both is an error)."""
    max_steps: int | None = Field(default=None, ge=1)
    """Total optimizer steps (null: ``epochs`` passes); set this or ``epochs``, not both."""
    batch_size: int = 4
    """Examples per micro-batch per process."""
    grad_accum: int = 1
    """Micro-batches per optimizer step. Global batch = batch_size x grad_accum x processes."""
    lr: float = 5e-6
    """Peak learning rate (AdamW)."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay on matrices (never on biases and norms)."""
    adam_betas: list[float] = Field(default_factory=lambda: [0.9, 0.999])
    """AdamW (beta1, beta2); EXO's official scripts use [0.9, 0.95]."""
    adam_eps: float = 1e-8
    """AdamW epsilon."""
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    """Learning-rate decay after warmup."""
    warmup_steps: int = 0
    """Linear warmup steps."""
    max_grad_norm: float | None = 1.0
    """Clip the global gradient norm to this value (null: no clipping)."""
    precision: Precision = "auto"
    """auto: bf16 where the hardware multiplies bf16 natively (AMX/AVX512-BF16 CPUs, bf16 GPUs), else fp32 (the
    choice and its reason are printed and saved in summary.json). bf16: autocast matmuls to bfloat16;
    weights and optimizer stay fp32."""
    log_every: int = 1
    """Write metrics every N steps (metrics.jsonl, TensorBoard)."""
    save_every: int | None = None
    """Write a resumable checkpoint every N steps (null: only at the end and on SIGINT/SIGTERM)."""
    keep_checkpoints: int = 2
    """How many recent checkpoints to keep."""
    eval_every: int | None = None
    """Run the recipe's evaluations (held-out loss / preference metrics, and train.eval) every N steps (null:
    before and after training only)."""
    eval: list[EvalItem] = Field(default_factory=list)
    """alignkit sft, dpo and rl (rm and prm refuse it): evaluations of the policy's greedy answers on held-out
    files (kinds ifeval, verifiable, mini_suite, mathusereval, reward), run before training, every eval_every
    steps and at the end, logged as eval/<name>/<metric> (docs/training.md, "Evaluation during training")."""
    report_to: list[TrackerName] = Field(default_factory=lambda: ["tensorboard"])
    """Experiment trackers for the logged metrics: tensorboard (output_dir/tensorboard), wandb, mlflow
    (optional extras alignkit[wandb] / alignkit[mlflow]; see docs/training.md); [] for none."""
    progress: bool = True
    """Show a progress bar."""
    renamed = {"tensorboard": Renamed("report_to", ((True, ["tensorboard"]), (False, [])))}  # removed in 02f58cb

    @field_validator("report_to")
    @classmethod
    def _trackers_installed(cls, names: list[str]) -> list[str]:
        return check_installed(names)

    @field_validator("eval")
    @classmethod
    def _distinct_names(cls, items: list) -> list:
        return check_items(items)

    @model_validator(mode="after")
    def _one_length(self) -> TrainConfig:
        # Refuse, don't downgrade: one of the two would be silently ignored.
        if self.epochs is not None and self.max_steps is not None:
            raise ValueError(
                f"set train.epochs ({self.epochs}) or train.max_steps ({self.max_steps}), not both"
            )
        return self


class NonFiniteError(RuntimeError):
    """A loss or gradient became NaN/inf: training stops with a diagnostic."""


class Objective(Protocol):
    def units(self, batch: dict[str, torch.Tensor]) -> int:
        """Normalisation units in the micro-batch (known before the forward pass)."""

    def __call__(self, model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return (sum of per-unit losses, detached per-example metrics)."""


@dataclass
class TrainResult:
    step: int
    interrupted: bool = False
    signal: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


def step_indices(n: int, step: int, global_batch: int, seed: int) -> list[int]:
    """Example indices of optimizer step ``step`` (deterministic in (seed, epoch)).

    Each epoch is a seeded permutation; a last partial global batch is filled by wrapping
    around to the start of the permutation, as DistributedSampler does.
    """
    per_epoch = math.ceil(n / global_batch)
    epoch, pos = divmod(step, per_epoch)
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=gen).tolist()
    idx = perm[pos * global_batch : (pos + 1) * global_batch]
    while len(idx) < global_batch:
        idx += perm[: global_batch - len(idx)]
    return idx


def steps_per_epoch(n: int, global_batch: int) -> int:
    return math.ceil(n / global_batch)


def epoch_micro_batches(n: int, batch_size: int, grad_accum: int, processes: int, seed: int) -> list[list[int]]:
    """Every micro-batch of epoch 0, as example indices, exactly as the loop will form them."""
    global_batch = batch_size * grad_accum * processes
    out = []
    for step in range(steps_per_epoch(n, global_batch)):
        idx = step_indices(n, step, global_batch, seed)
        out.extend(idx[i : i + batch_size] for i in range(0, global_batch, batch_size))
    return out


def build_optimizer(cfg: TrainConfig, model) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # The fused kernel updates every tensor in one pass over memory: for SmolLM2-135M on 2 CPU cores a
    # step takes ~90 ms instead of ~290-440 ms with foreach (benchmarks/optimizer_step.py), same update
    # to fp32 rounding. Float parameters only (torch's requirement); anything else keeps foreach.
    fused = all(p.is_floating_point() for p in params)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.adam_betas), eps=cfg.adam_eps, fused=fused)


def build_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer, total_steps: int):
    """``cfg.schedule`` after ``cfg.warmup_steps`` linear warmup steps, over ``total_steps`` optimizer steps.

    Not ``prepare``d: accelerate would step it once per process per call (it assumes per-process
    dataloader lengths); our step count is already global. Register it for checkpointing instead.
    """
    from transformers import get_scheduler

    kind = "constant_with_warmup" if cfg.schedule == "constant" else cfg.schedule
    return get_scheduler(kind, optimizer, num_warmup_steps=cfg.warmup_steps, num_training_steps=total_steps)


def clip_and_step(accelerator, model, optimizer, scheduler, max_grad_norm: float | None, where: str) -> float:
    """Clip ``model``'s gradient norm (``max_grad_norm``; null: only measure it), refuse a non-finite norm,
    then step the optimizer and scheduler and clear the gradients. Returns the norm before clipping (0.0 when
    DeepSpeed clips inside its engine and ``clip_grad_norm_`` reports nothing)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if max_grad_norm is not None:
        norm = accelerator.clip_grad_norm_(params, max_grad_norm)
        norm = 0.0 if norm is None else float(norm)
    else:
        grads = [p.grad.detach().norm() for p in params if p.grad is not None]
        norm = float(torch.linalg.vector_norm(torch.stack(grads))) if grads else 0.0
    if not math.isfinite(norm):
        raise NonFiniteError(f"{where}: gradient norm is {norm} after a finite loss; "
                             "lower the learning rate or use precision=fp32")
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return norm


class StopSignals:
    """SIGINT/SIGTERM set ``.signal`` (the loop finishes the step, checkpoints and stops; SIGKILL: resume from
    the last checkpoint). The previous handlers come back on exit; off the main thread nothing is installed."""

    def __enter__(self) -> StopSignals:
        self.signal: str | None = None
        self._old = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, _frame) -> None:
        self.signal = signal.Signals(signum).name

    def __exit__(self, *exc) -> bool:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        return False


def drive(cfg: TrainConfig, accelerator, out: Path, total: int, start: int, resumed: bool,
          step: Callable[[], dict[str, Any]], save: Callable[[], Path], name: str,
          info: Callable[[dict[str, Any]], str],
          evals: Callable[[], dict[str, float]] | None = None) -> TrainResult:
    """The outer loop every recipe runs: ``step()`` until ``total`` (each returns its logs with the new
    ``"step"``), metrics every ``cfg.log_every`` steps (metrics.jsonl + trackers, main process), a checkpoint
    (``save()``) every ``cfg.save_every`` steps and at the end, and on SIGINT/SIGTERM a checkpoint and a stop.
    metrics.jsonl starts empty, or on resume (``resumed``) keeps the lines up to step ``start``
    (:func:`~alignkit.train.checkpoint.start_metrics`).

    ``evals()`` (``train.eval``, main process) runs before the first step of a fresh run (a ``"step": 0``
    line), after every ``cfg.eval_every``-th step and after the last; its metrics go into that step's line as
    ``eval/<name>/<metric>`` (and their seconds as ``time/eval_s``), which is then logged whatever
    ``cfg.log_every`` says. An evaluation belongs to
    its step's line, so a resumed run neither repeats nor loses one: the lines it keeps hold theirs."""
    main = accelerator.is_main_process
    ckpt.start_metrics(accelerator, out, start if resumed else None)
    trackers = Trackers(cfg.report_to, out, cfg.model_dump(mode="json")) if cfg.report_to and main else None
    result = TrainResult(step=start)
    current = start
    try:
        if evals is not None and main and not resumed:
            log_metrics(out, {"step": start, **_timed(evals)}, trackers)
        with StopSignals() as stop, ProgressBar(name, total, cfg.progress and main, completed=start) as bar:
            while current < total:
                logs = step()
                current = logs["step"]
                due = evals is not None and main and (current == total or bool(cfg.eval_every)
                                                      and current % cfg.eval_every == 0)
                if due:
                    logs.update(_timed(evals))
                if main and (current % cfg.log_every == 0 or current == total or due):
                    log_metrics(out, logs, trackers)
                result.history.append(logs)
                bar.advance(info=info(logs))
                if cfg.save_every and current % cfg.save_every == 0:
                    save()
                if stop.signal:
                    break
            if stop.signal or current == total:
                save()
    finally:
        if trackers is not None:
            trackers.close()
    result.step, result.interrupted, result.signal = current, stop.signal is not None, stop.signal
    return result


def _prefixed(metrics: dict[str, float]) -> dict[str, float]:
    return {f"eval/{k}": v for k, v in metrics.items()}


def _timed(evals: Callable[[], dict[str, float]]) -> dict[str, float]:
    """``evals()``'s metrics as ``eval/...`` plus the seconds they took (``time/eval_s``)."""
    t0 = time.perf_counter()
    metrics = _prefixed(evals())
    return {**metrics, "time/eval_s": round(time.perf_counter() - t0, 3)}


class Trainer:
    """Runs the shared loop for one recipe. See the module docstring for the loss normalisation."""

    def __init__(
        self,
        cfg: TrainConfig,
        accelerator,
        model,
        examples: list[TokenizedExample],
        objective: Objective,
        collate_fn: Callable[[list[TokenizedExample]], dict[str, torch.Tensor]],
        run_state: dict[str, Any] | None = None,
        evaluate: Callable[[Any], dict[str, float]] | None = None,
        evals: Callable[[Any], dict[str, float]] | None = None,
    ):
        if len(examples) == 0:
            raise ValueError("no training examples left after the data policy")
        if cfg.eval and evals is None:  # refuse, don't skip: the recipe has no policy that answers
            raise ConfigError("train.eval (evaluation during training) is supported by alignkit sft, dpo and rl; "
                              "this recipe cannot run it: remove train.eval")
        if cfg.grad_accum > 1 and str(accelerator.distributed_type) in ("DistributedType.DEEPSPEED", "DEEPSPEED"):
            # DeepSpeed's engine steps on every backward unless it owns the accumulation; our exact
            # global-unit normalisation needs the micro-batches of a step to be ours. Refuse, don't guess.
            raise ValueError("DeepSpeed runs need train.grad_accum=1 (raise train.batch_size, or use the FSDP profile)")
        self.cfg, self.acc, self.objective, self.collate = cfg, accelerator, objective, collate_fn
        self.examples = examples
        self.evaluate, self.evals = evaluate, evals
        self.run_state = run_state or {}
        self.global_batch = cfg.batch_size * cfg.grad_accum * accelerator.num_processes
        total = cfg.max_steps or (cfg.epochs or 1) * steps_per_epoch(len(examples), self.global_batch)
        self.total_steps = total
        optimizer = build_optimizer(cfg, model)
        scheduler = build_scheduler(cfg, optimizer, total)
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        self.scheduler = scheduler
        accelerator.register_for_checkpointing(scheduler)
        self.step = 0
        self.out = Path(cfg.output_dir)

    # -- data ---------------------------------------------------------------------------
    def micro_batches(self, step: int) -> list[dict[str, torch.Tensor]]:
        idx = step_indices(len(self.examples), step, self.global_batch, self.cfg.seed)
        per_rank = self.cfg.batch_size * self.cfg.grad_accum
        mine = idx[self.acc.process_index * per_rank : (self.acc.process_index + 1) * per_rank]
        out = []
        for j in range(self.cfg.grad_accum):
            chunk = mine[j * self.cfg.batch_size : (j + 1) * self.cfg.batch_size]
            batch = self.collate([self.examples[i] for i in chunk])
            out.append({k: v.to(self.acc.device) for k, v in batch.items()})
        return out

    # -- one optimizer step -------------------------------------------------------------
    def train_step(self) -> dict[str, float]:
        batches = self.micro_batches(self.step)
        local_units = sum(self.objective.units(b) for b in batches)
        global_units = self._reduce_sum(float(local_units))
        if global_units <= 0:
            raise ValueError(f"step {self.step}: the global batch has no loss units (all responses empty?)")
        # DDP averages gradients over processes, so scale by the process count to get a global sum / N.
        scale = self.acc.num_processes / global_units
        loss_total = 0.0
        metric_lists: dict[str, list[torch.Tensor]] = defaultdict(list)
        self.model.train()
        for j, batch in enumerate(batches):
            last = j == len(batches) - 1
            ctx = self.acc.no_sync(self.model) if not last else _nullcontext()
            with ctx:
                with self.acc.autocast():
                    loss_sum, metrics = self.objective(self.model, batch)
                if not torch.isfinite(loss_sum):
                    raise NonFiniteError(
                        f"step {self.step}, micro-batch {j}: loss is {loss_sum.item()} "
                        f"(rows {batch['index'].tolist()}, lr {self.scheduler.get_last_lr()[0]:.3g}); "
                        "lower the learning rate, check the data, or use precision=fp32"
                    )
                self.acc.backward(loss_sum * scale)
            loss_total += float(loss_sum.detach())
            for k, v in metrics.items():
                metric_lists[k].append(v.detach().float().reshape(-1))
        grad_norm = clip_and_step(self.acc, self.model, self.optimizer, self.scheduler, self.cfg.max_grad_norm,
                                  f"step {self.step}")
        self.step += 1
        logs = {
            "step": self.step,
            "loss": self._reduce_sum(loss_total) / global_units,
            "lr": self.scheduler.get_last_lr()[0],
            "grad_norm": grad_norm,
            "units": global_units,
        }
        for k, parts in metric_lists.items():
            vals = self.acc.gather_for_metrics(torch.cat(parts)) if self.acc.num_processes > 1 else torch.cat(parts)
            logs[k] = float(vals.mean())
        return logs

    def _reduce_sum(self, value: float) -> float:
        if self.acc.num_processes == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.acc.device)
        return float(self.acc.reduce(t, reduction="sum").item())

    # -- bookkeeping ---------------------------------------------------------------------
    def save(self) -> Path:
        state = {"step": self.step, "total_steps": self.total_steps, **self.run_state}
        return ckpt.save_checkpoint(self.acc, self.out, self.step, state, self.cfg.keep_checkpoints)

    def resume(self, path: Path | None = None) -> int:
        state = ckpt.resume_checkpoint(self.acc, self.out, path)
        self.step = int(state["step"])
        if state.get("total_steps") not in (None, self.total_steps):
            raise ValueError(
                f"--resume: checkpoint planned {state['total_steps']} steps, this config plans {self.total_steps}; "
                "resume with the same data, batch size, accumulation and process count"
            )
        return self.step

    def train(self, resume: bool = False) -> TrainResult:
        self.out.mkdir(parents=True, exist_ok=True)
        if resume:
            self.resume()
        t0 = time.perf_counter()

        def one_step() -> dict[str, Any]:
            logs = self.train_step()
            logs["elapsed_s"] = round(time.perf_counter() - t0, 3)
            if self.evaluate and self.cfg.eval_every and self.step % self.cfg.eval_every == 0:
                logs.update(_prefixed(self.evaluate(self.model)))
            return logs

        evals = (lambda: self.evals(self.model)) if self.evals else None
        return drive(self.cfg, self.acc, self.out, self.total_steps, self.step, resume, one_step, self.save,
                     "train", lambda logs: f"loss {logs['loss']:.4f}", evals)


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
