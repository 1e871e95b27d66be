"""What every recipe does before and after the loop: config sections, accelerator, model, data.

Also the forward wrappers: DDP/FSDP synchronise gradients only for work done inside the wrapped
module's ``forward``, and our log-prob op calls the backbone and lm-head directly, so recipes
wrap the model in :class:`LogpsForward` / :class:`RewardForward` and let accelerate wrap *that*.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import torch
from pydantic import Field

from alignkit.config import StrictModel, dump_config
from alignkit.data.rows import Example, RowKind, read_rows
from alignkit.data.tokenize import DataPolicy, DataSummary, TokenizedExample, TrainOn, tokenize_examples
from alignkit.errors import DataError
from alignkit.models import DEFAULT_MODEL


class LoraSettings(StrictModel):
    """LoRA through PEFT: only the adapter trains."""

    r: int = 16
    """Adapter rank."""
    alpha: int = 32
    """Scaling numerator (the update is scaled by alpha / r)."""
    dropout: float = 0.0
    """Dropout on the adapter input."""
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    """Module names that get adapters."""
    merge_on_save: bool = True
    """Save merged weights (loadable with from_pretrained) plus the adapter under adapter/."""


class ModelConfig(StrictModel):
    """The model to train."""

    name_or_path: str = DEFAULT_MODEL
    """Embedded name, local Hugging Face directory or hub id."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward: less memory, ~30% more compute."""
    lora: LoraSettings | None = None
    """Train a LoRA adapter instead of all weights (null: full fine-tuning)."""


class DataConfig(StrictModel):
    """Training data, its lengths and what happens to degenerate rows."""

    train: str
    """JSONL/JSON/Parquet file or saved HF dataset directory."""
    eval: str | None = None
    """Held-out file in the same format (optional)."""
    eval_fraction: float = Field(default=0.0, ge=0.0, lt=1.0)
    """If no eval file: hold out this fraction of train rows, 0 <= f < 1 (deterministic by seed)."""
    limits: DataPolicy = Field(default_factory=DataPolicy)
    train_on: TrainOn = "all_assistant"
    """Conversations with several assistant turns (tool use, multi-turn chat): train on every assistant
    turn, or on the last one only. Tool results and user turns are never trained on."""
    renamed = {"policy": "limits"}  # "policy" is the model being trained everywhere else


def resolve_run_precision(requested: str):
    """The precision a run uses (``auto`` probed, see :mod:`alignkit.precision`), announced once."""
    from alignkit.precision import announce, resolve_precision

    choice = resolve_precision(requested, "cuda" if torch.cuda.is_available() else "cpu")
    if int(os.environ.get("RANK", "0")) == 0:  # before the Accelerator exists; torchrun/accelerate set RANK
        announce(choice)
    return choice


def make_accelerator(cfg_precision: str):
    """An Accelerator for ``fp32`` or ``bf16`` (``auto`` is resolved by :func:`resolve_run_precision`)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    if cfg_precision == "auto":
        cfg_precision = resolve_run_precision(cfg_precision).precision
    # accelerate keeps one process-wide state and refuses a second Accelerator with another
    # precision; recipes run one after another in a process (the demo, tests) may differ, so reset
    # the precision state. The process group (PartialState) is kept.
    AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(mixed_precision="bf16" if cfg_precision == "bf16" else "no",
                       cpu=not torch.cuda.is_available())


def seed_everything(seed: int) -> None:
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def prepare_output(accelerator, cfg, output_dir: str) -> Path:
    """Create the output dir and save the resolved config (main process)."""
    out = Path(output_dir)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        dump_config(cfg, out / "config.yaml")
    accelerator.wait_for_everyone()
    return out


def load_data(
    data: DataConfig, kind: RowKind, tokenizer, seed: int, pairwise: bool = False
) -> tuple[list[TokenizedExample], list[TokenizedExample], DataSummary]:
    """Read, validate, split and tokenise; returns (train, eval, summary of the train split)."""
    rows = read_rows(data.train, kind)
    if data.eval:
        eval_rows = read_rows(data.eval, kind)
    elif data.eval_fraction > 0:
        rows, eval_rows = split_rows(rows, data.eval_fraction, seed)
    else:
        eval_rows = []
    train, summary = tokenize_examples(rows, tokenizer, data.limits, pairwise=pairwise, train_on=data.train_on)
    if not train:
        raise DataError(f"{data.train}: no training rows left after the data policy ({summary.as_dict()})")
    evals, _ = (tokenize_examples(eval_rows, tokenizer, data.limits, pairwise=pairwise, train_on=data.train_on)
                if eval_rows else ([], None))
    return train, evals, summary


def split_rows(rows: list[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    if not 0 < fraction < 1:
        raise ValueError(f"data.eval_fraction must be in (0, 1), got {fraction}")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, int(round(len(rows) * fraction)))
    held = set(order[:n_eval])
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


def load_policy(model_cfg: ModelConfig, seed: int, head: str = "causal-lm", tokenizer=None):
    """Load the trainable model (causal LM, or reward model with ``head="reward"``) and its tokenizer."""
    from alignkit.models import load_tokenizer, load_trainable

    if tokenizer is None:
        tokenizer = load_tokenizer(model_cfg.name_or_path)
    torch.manual_seed(seed)  # a new head's initialisation
    lora = model_cfg.lora.model_dump(exclude={"merge_on_save"}) if model_cfg.lora is not None else None
    model = load_trainable(model_cfg.name_or_path, head, model_cfg.gradient_checkpointing, lora)
    return model, tokenizer


class LogpsForward(torch.nn.Module):
    """``forward(input_ids, attention_mask, loss_mask) -> (logps (N,), counts (N,))``."""

    def __init__(self, model, temperature: float = 1.0, chunk_size: int = 1024):
        super().__init__()
        self.model = model
        self.temperature = temperature
        self.chunk_size = chunk_size

    def forward(self, input_ids, attention_mask, loss_mask, **layout):
        from alignkit.ops.logprobs import response_logps

        out = response_logps(self.model, input_ids, attention_mask, loss_mask,
                             temperature=self.temperature, chunk_size=self.chunk_size, **layout)
        return out.logps, out.counts


def forward_logps(model: LogpsForward, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed response log-probs and token counts, ``(B, C)`` float32 / long, for a batch from
    :func:`~alignkit.data.batching.collate` or :func:`~alignkit.data.batching.collate_segments`.
    Slots that are not ``valid`` (rows with fewer completions) are 0 in both."""
    from alignkit.data.batching import by_completion

    valid = batch["valid"]
    layout = {k: batch[k] for k in ("position_ids", "predictor", "sequence") if k in batch}
    if layout:
        layout["n_sequences"] = valid.numel()
    logps, counts = model(batch["input_ids"], batch["attention_mask"], batch["loss_mask"], **layout)
    logps, counts = by_completion(logps.float(), valid.shape[1]), by_completion(counts, valid.shape[1])
    return logps.where(valid, 0.0), counts.where(valid, 0)


class RewardForward(torch.nn.Module):
    """Scalar reward at each sequence's last real token.

    HF's sequence-classification pooling looks for the last token that is *not* the pad id; when
    pad == EOS (SmolLM2, Llama and many others) that skips the final EOS of every sequence and
    scores the token before it. We pool at ``attention_mask.sum() - 1`` instead.
    """

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        base = getattr(self.model, "base_model_prefix", "model")
        inner = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        backbone = getattr(inner, base)
        hidden = backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        last = attention_mask.sum(dim=1) - 1
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        return inner.score(pooled).squeeze(-1).float()


def write_summary(accelerator, out: Path, payload: dict) -> None:
    if accelerator.is_main_process:
        (out / "summary.json").write_text(json.dumps(payload, indent=1, sort_keys=True, default=str))

