"""Process reward models: ``alignkit prm`` (per-step correctness on TRL stepwise rows).

Rows: ``{"prompt": str, "completions": [step, ...], "labels": [bool | p, ...]}`` (TRL's stepwise
supervision; soft labels in [0, 1] come from ``alignkit prm label``). A sequence is

    prompt tokens | step_1 tokens, separator | step_2 tokens, separator | ...

(each step tokenised on its own, the separator -- ``step_separator``, a newline by default -- after
every step, as in TRL's PRM layout). A scalar head reads the hidden state at the **last separator
token of each step**; its logit ``z_s`` is trained with binary cross-entropy against the step's
label (``alignkit.losses.binary_reward_loss``; every labelled step is one loss unit). The step's
correctness probability is ``sigmoid(z_s)``; a solution score aggregates them (``min | last |
prod``, ``alignkit.losses.aggregate_step_scores``).

The export is an ``AutoModelForSequenceClassification`` (one label) plus ``prm.json`` holding the
separator, prompt rendering and aggregation, so scorers split and score text the way training did.
With ``chat_template: true`` (default) the prompt is rendered as one user message with the chat
template and the generation prompt, so a PRM scores the policy's own answer layout.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field

from alignkit.config import StrictModel
from alignkit.data.rows import Example, read_rows
from alignkit.errors import DataError
from alignkit.train.loop import TrainConfig, Trainer
from alignkit.train.run import (
    DataConfig,
    ModelConfig,
    make_accelerator,
    prepare_output,
    resolve_run_precision,
    seed_everything,
    split_rows,
    write_summary,
)

PRM_FILE = "prm.json"


class PRMConfig(StrictModel):
    """``alignkit prm`` recipe. Rows: prompt / completions (steps) / labels (one per step)."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig
    step_separator: str = "\n"
    """Text appended after every step; the head scores the last token of each separator."""
    chat_template: bool = True
    """Render the prompt as a user message with the chat template (false: raw prompt text)."""
    aggregation: Literal["min", "last", "prod"] = "min"
    """How step probabilities become one solution score (evaluation, scorers, best-of-N)."""
    train: TrainConfig = Field(default_factory=TrainConfig)


@dataclass
class StepExample:
    index: int
    input_ids: list[int]
    step_positions: list[int]  # index of the token whose hidden state scores each step
    labels: list[float]


def encode_steps(tokenizer, prompt: str, steps: list[str], separator: str, chat_template: bool
                 ) -> tuple[list[int], list[int]]:
    """Token ids of ``prompt`` + steps (each followed by ``separator``) and each step's score position."""
    from alignkit.data.tokenize import ChatTokenizer

    if chat_template:
        ids = ChatTokenizer(tokenizer).prompt_ids([{"role": "user", "content": prompt}], True)
    else:
        ids = tokenizer(prompt)["input_ids"]
    sep = tokenizer(separator, add_special_tokens=False)["input_ids"]
    if not sep:
        raise ValueError(f"step_separator {separator!r} tokenises to nothing")
    ids, positions = list(ids), []
    for step in steps:
        ids += tokenizer(step, add_special_tokens=False)["input_ids"] + sep
        positions.append(len(ids) - 1)
    return ids, positions


def tokenize_stepwise(rows: list[Example], tokenizer, cfg: PRMConfig) -> tuple[list[StepExample], dict[str, int]]:
    """Tokenise stepwise rows; a row over ``data.limits.max_length`` is cut after its last whole
    step (``on_long_completion: truncate``), dropped, or refused, and counted."""
    limits = cfg.data.limits
    events: Counter = Counter()
    out = []
    for ex in rows:
        ids, pos = encode_steps(tokenizer, ex.prompt, ex.completions, cfg.step_separator, cfg.chat_template)
        labels = list(ex.labels)
        if len(ids) > limits.max_length:
            fits = sum(p < limits.max_length for p in pos)
            if limits.on_long_completion == "error":
                raise DataError(f"row {ex.index + 1}: {len(ids)} tokens > max_length {limits.max_length} (policy: error)")
            if limits.on_long_completion == "drop" or fits == 0:
                events["dropped_long_sequence"] += 1
                continue
            events["truncated_steps"] += 1
            ids, pos, labels = ids[: pos[fits - 1] + 1], pos[:fits], labels[:fits]
        out.append(StepExample(ex.index, ids, pos, labels))
    return out, {"rows": len(rows), "kept": len(out), "steps": sum(len(e.labels) for e in out), **events}


def collate_steps(examples: list[StepExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``/``attention_mask`` plus ``(B, S)`` ``step_positions``, ``step_mask``, ``step_labels``."""
    width = max(len(e.input_ids) for e in examples)
    steps = max(len(e.step_positions) for e in examples)
    b = len(examples)
    batch = {"input_ids": torch.full((b, width), pad_id, dtype=torch.long),
             "attention_mask": torch.zeros((b, width), dtype=torch.long),
             "step_positions": torch.zeros((b, steps), dtype=torch.long),
             "step_mask": torch.zeros((b, steps), dtype=torch.bool),
             "step_labels": torch.zeros((b, steps), dtype=torch.float32),
             "index": torch.tensor([e.index for e in examples], dtype=torch.long)}
    for i, e in enumerate(examples):
        n, s = len(e.input_ids), len(e.step_positions)
        batch["input_ids"][i, :n] = torch.tensor(e.input_ids)
        batch["attention_mask"][i, :n] = 1
        batch["step_positions"][i, :s] = torch.tensor(e.step_positions)
        batch["step_mask"][i, :s] = True
        batch["step_labels"][i, :s] = torch.tensor(e.labels)
    return batch


class PRMForward(torch.nn.Module):
    """``forward(input_ids, attention_mask, step_positions) -> (B, S)`` step logits of the score head."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, step_positions):
        inner = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        backbone = getattr(inner, getattr(inner, "base_model_prefix", "model"))
        hidden = backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        picked = hidden.gather(1, step_positions[..., None].expand(-1, -1, hidden.shape[-1]))
        return inner.score(picked).squeeze(-1).float()


class PRMObjective:
    def units(self, batch):
        return int(batch["step_mask"].sum())

    def __call__(self, model, batch):
        from alignkit.losses import binary_reward_loss

        logits = model(batch["input_ids"], batch["attention_mask"], batch["step_positions"])
        mask = batch["step_mask"]
        loss, metrics = binary_reward_loss(logits[mask], batch["step_labels"][mask])
        return loss.sum(), {"step_accuracy": metrics["bce/accuracy"]}


@torch.no_grad()
def step_probabilities(model: PRMForward, examples: list[StepExample], pad_id: int, batch_size: int,
                       device) -> list[list[float]]:
    """``sigmoid`` of the head at every step of every example (input order)."""
    was = model.training
    model.eval()
    out = []
    for i in range(0, len(examples), batch_size):
        chunk = examples[i : i + batch_size]
        b = collate_steps(chunk, pad_id)
        p = model(b["input_ids"].to(device), b["attention_mask"].to(device), b["step_positions"].to(device))
        p = p.sigmoid().cpu()
        out += [p[j, : len(e.step_positions)].tolist() for j, e in enumerate(chunk)]
    model.train(was)
    return out


def evaluate_prm(model, examples, pad_id, batch_size, device, aggregation: str) -> dict[str, float]:
    """Step accuracy, and solution accuracy: aggregated score > 0.5 vs "every step labelled correct"."""
    from alignkit.losses import aggregate_step_scores

    probs = step_probabilities(model, examples, pad_id, batch_size, device)
    step_hits = [(p > 0.5) == (y > 0.5) for ps, e in zip(probs, examples, strict=True) for p, y in zip(ps, e.labels, strict=True)]
    width = max(len(p) for p in probs)
    mat = torch.tensor([p + [1.0] * (width - len(p)) for p in probs])
    mask = torch.tensor([[j < len(p) for j in range(width)] for p in probs])
    sol = aggregate_step_scores(mat, mask, aggregation).tolist()
    truth = [all(y > 0.5 for y in e.labels) for e in examples]
    return {"step_accuracy": sum(step_hits) / len(step_hits),
            "solution_accuracy": sum((s > 0.5) == t for s, t in zip(sol, truth, strict=True)) / len(examples),
            "n": len(examples), "steps": len(step_hits)}


def _load_stepwise(cfg: PRMConfig, tok) -> tuple[list[StepExample], list[StepExample], dict[str, Any]]:
    rows = read_rows(cfg.data.train, "stepwise")
    if cfg.data.eval:
        eval_rows = read_rows(cfg.data.eval, "stepwise")
    elif cfg.data.eval_fraction > 0:
        rows, eval_rows = split_rows(rows, cfg.data.eval_fraction, cfg.train.seed)
    else:
        eval_rows = []
    train, summary = tokenize_stepwise(rows, tok, cfg)
    if not train:
        raise DataError(f"{cfg.data.train}: no training rows left after the data policy ({summary})")
    evals, _ = tokenize_stepwise(eval_rows, tok, cfg) if eval_rows else ([], None)
    return train, evals, summary


def train_prm(cfg: PRMConfig, resume: bool = False) -> dict[str, Any]:
    from alignkit.train.checkpoint import export_model
    from alignkit.train.reward import load_trainable_reward_model

    prec = resolve_run_precision(cfg.train.precision)
    acc = make_accelerator(prec.precision)
    seed_everything(cfg.train.seed)
    model, tok = load_trainable_reward_model(cfg.model, cfg.train.seed)
    train, evals, summary = _load_stepwise(cfg, tok)
    out = prepare_output(acc, cfg, cfg.train.output_dir)
    fwd = PRMForward(model.to(acc.device))
    evaluate = (lambda m: evaluate_prm(acc.unwrap_model(m), evals, tok.pad_token_id, cfg.train.batch_size,
                                       acc.device, cfg.aggregation)) if evals else None
    before = evaluate(fwd) if evaluate else {}
    trainer = Trainer(cfg.train, acc, fwd, train, PRMObjective(), lambda exs: collate_steps(exs, tok.pad_token_id),
                      run_state={"data": summary}, evaluate=evaluate)
    result = trainer.train(resume=resume)
    after = {}
    if not result.interrupted:
        export_model(acc, trainer.model, tok, out, merge_lora=cfg.model.lora.merge_on_save if cfg.model.lora else True)
        if acc.is_main_process:
            (out / PRM_FILE).write_text(json.dumps({"step_separator": cfg.step_separator, "chat_template": cfg.chat_template,
                                                    "aggregation": cfg.aggregation}, indent=1))
        after = evaluate(trainer.model) if evaluate else {}
    payload = {"recipe": "prm", "precision": prec.as_dict(), "steps": result.step, "interrupted": result.interrupted, "signal": result.signal,
               "data": summary, "eval_before": before, "eval_after": after,
               "final_loss": result.history[-1]["loss"] if result.history else None, "output_dir": str(out)}
    write_summary(acc, out, payload)
    return payload


def read_prm_settings(model_dir: str | Path) -> dict[str, Any]:
    """The ``prm.json`` a PRM export carries (separator, prompt rendering, aggregation)."""
    path = Path(model_dir) / PRM_FILE
    if not path.is_file():
        raise DataError(f"{model_dir}: not a process reward model (no {PRM_FILE}; train one with alignkit prm)")
    return json.loads(path.read_text())


def split_steps(text: str, separator: str) -> list[str]:
    """A generated solution's steps: split at the separator, blank pieces dropped."""
    return [s for s in text.split(separator) if s.strip()]

