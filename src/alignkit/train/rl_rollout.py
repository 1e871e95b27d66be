"""The pieces of online RL that are not maths: prompt rows, rollouts, batch layout, the critic.

* **Prompt rows**: ``{"prompt": str | [messages], ...}``; every other key rides along to the reward
  function (the verifiable-instruction rows carry ``constraint``).
* **Rollout**: the shared generation engine (:class:`alignkit.generate.engine.HFEngine`) runs on the
  policy's own weights, so the "weight sync" between trainer and sampler is exact and free (with
  ``rollout.backend: vllm`` the weights are copied in first: ``rl_setup.policy_engine``). Each
  sample is seeded from ``(run seed, step, prompt position, sample index)``, never from a global
  RNG, so a resumed run and a run split over processes draw the same samples.
* **Layouts**: models see right-padded ``prompt + response`` rows; the RL maths sees *response
  layout* ``(B, L)`` (response tokens left-aligned). :func:`to_response_layout` converts.
* **Critic**: :class:`ValueModel` = a transformer backbone + a scalar head on every position,
  initialised from the policy (fresh head) or from an ``alignkit rm`` checkpoint (its score head).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from alignkit.errors import DataError


@dataclass
class Sample:
    """One sampled response and everything the update needs about it."""

    prompt_index: int  # row of the prompt file
    prompt_ids: list[int]
    response_ids: list[int]  # generated tokens, EOS included when the model stopped
    text: str
    finish_reason: str
    score: float = float("nan")  # raw reward (NaN: could not be computed -> masked, counted)
    behaviour_logps: list[float] | None = None  # log mu(y_t): the engine's sampling distribution, per token
    extras: dict[str, Any] = field(default_factory=dict)


def read_prompt_rows(path: str, needs_constraint: bool = False) -> list[dict[str, Any]]:
    """Validated prompt rows; errors name ``file:line: field``. ``needs_constraint``: the built-in
    verifier is the reward, so every row must be a valid IFEval row (``instruction_id_list``, ``kwargs``)."""
    from alignkit.data.verifiable import validate_row
    from alignkit.generate.jsonl import check_prompt, read_jsonl

    rows = []
    try:
        for line, row in read_jsonl(path):
            where = f"{path}:{line}"
            row = {**row, "prompt": check_prompt(row.get("prompt"), where)}
            if needs_constraint:
                validate_row(row, where)
            rows.append(row)
    except DataError as exc:
        raise DataError(str(exc)) from None
    return rows


def sample_seed(seed: int, step: int, position: int) -> int:
    """Seed of the request for the prompt at global ``position`` of RL step ``step``."""
    digest = hashlib.sha256(f"alignkit-rl:{seed}:{step}:{position}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 62) - 1)


def rollout(engine, rows: list[dict], indices: list[int], positions: list[int], params, seed: int,
            step: int) -> list[Sample]:
    """``params.n`` samples for each prompt ``rows[i]``; grouped by prompt (sample-major within a group)."""
    prompts = [rows[i]["prompt"] for i in indices]
    seeds = [sample_seed(seed, step, p) for p in positions]
    results = engine.generate(prompts, params, seeds=seeds) if prompts else []
    samples = []
    for i, prompt, res in zip(indices, prompts, results, strict=True):
        prompt_ids = engine.encode(prompt)
        for c in res.completions:
            samples.append(Sample(i, prompt_ids, list(c.token_ids), c.text, c.finish_reason,
                                  behaviour_logps=c.sampled_logprobs))
    return samples


def collate_samples(samples: list[Sample], pad_id: int, device) -> dict[str, Tensor]:
    """Right-padded ``input_ids``/``attention_mask``/``loss_mask`` and the prompt lengths ``plen``."""
    seqs = [s.prompt_ids + s.response_ids for s in samples]
    width = max(len(x) for x in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(seqs), width), dtype=torch.long)
    loss_mask = torch.zeros((len(seqs), width), dtype=torch.bool)
    for b, (s, seq) in enumerate(zip(samples, seqs, strict=True)):
        ids[b, : len(seq)] = torch.tensor(seq)
        attn[b, : len(seq)] = 1
        loss_mask[b, len(s.prompt_ids) : len(seq)] = True
    plen = torch.tensor([len(s.prompt_ids) for s in samples])
    return {"input_ids": ids.to(device), "attention_mask": attn.to(device), "loss_mask": loss_mask.to(device),
            "plen": plen.to(device)}


def to_response_layout(x: Tensor, plen: Tensor, length: int) -> Tensor:
    """``(B, T)`` aligned with ``input_ids`` -> ``(B, length)``: column ``j`` is response token ``j``."""
    cols = plen[:, None] + torch.arange(length, device=x.device)[None, :]
    padded = torch.nn.functional.pad(x, (0, max(0, int(cols.max()) + 1 - x.shape[1])))
    return padded.gather(1, cols)


def behaviour_logps(samples: list[Sample], length: int, device) -> Tensor:
    """``(B, length)`` float32 response layout of the samples' behaviour log-probs (0 on padding)."""
    out = torch.zeros((len(samples), length), dtype=torch.float32)
    for b, s in enumerate(samples):
        if s.behaviour_logps is None or len(s.behaviour_logps) != len(s.response_ids):
            raise ValueError(f"sample {b} (prompt {s.prompt_index}) carries no behaviour log-prob per response token")
        out[b, : len(s.behaviour_logps)] = torch.tensor(s.behaviour_logps, dtype=torch.float32)
    return out.to(device)


def response_mask(samples: list[Sample], length: int, device) -> Tensor:
    lens = torch.tensor([len(s.response_ids) for s in samples], device=device)
    return torch.arange(length, device=device)[None, :] < lens[:, None]


class TokenLogpsForward(nn.Module):
    """``forward(input_ids, attention_mask, loss_mask) -> (per-token logps, entropy)``, both ``(B, T)``.

    Wrapping the policy so that DDP/FSDP see the whole computation inside ``forward``."""

    def __init__(self, model, temperature: float = 1.0):
        super().__init__()
        self.model = model
        self.temperature = temperature

    def forward(self, input_ids, attention_mask, loss_mask):
        from alignkit.ops.logprobs import response_token_logps

        out = response_token_logps(self.model, input_ids, attention_mask, loss_mask, temperature=self.temperature)
        return out.logps, out.entropy


class ValueModel(nn.Module):
    """Critic: ``values[b, t]`` = head(hidden state at ``t - 1``), the value of the state before token ``t``."""

    def __init__(self, backbone: nn.Module, head: nn.Linear):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, input_ids, attention_mask):
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask,
                               position_ids=position_ids).last_hidden_state
        v = self.head(hidden[:, :-1]).squeeze(-1).float()
        return torch.nn.functional.pad(v, (1, 0))


def load_critic(init: str, name_or_path: str, seed: int) -> ValueModel:
    """A trainable critic from a causal LM (``init="policy"``: fresh head, seeded) or an ``alignkit rm``
    checkpoint (``init="reward_model"``: its backbone and score head)."""
    from alignkit.models import load_causal_lm, load_reward_model

    if init == "reward_model":
        rm = load_reward_model(name_or_path, trainable=True)
        return ValueModel(getattr(rm, rm.base_model_prefix), rm.score)
    lm = load_causal_lm(name_or_path, trainable=True)
    hidden = lm.config.hidden_size
    gen = torch.Generator().manual_seed(seed)
    head = nn.Linear(hidden, 1)
    with torch.no_grad():
        head.weight.copy_(torch.randn(1, hidden, generator=gen) / (hidden + 1) ** 0.5)
        head.bias.zero_()
    return ValueModel(lm.get_decoder(), head)
