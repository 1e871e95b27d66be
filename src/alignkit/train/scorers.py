"""Scoring text with trained reward models: outcome RMs (``alignkit rm``) and PRMs (``alignkit prm``).

Both tokenise exactly as their training recipe did, so a score at inference is the score the
model learned to give: :class:`RewardScorer` renders ``prompt`` + ``completion`` like a preference
row (a message list, or a plain string when the rows were plain), :class:`ProcessRewardScorer`
splits a solution at the saved step separator and reads the head at every step end.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from alignkit.data.rows import Text


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


class RewardScorer:
    """``score(prompts, completions) -> list[float]`` with a scalar reward model directory."""

    def __init__(self, model_dir: str, batch_size: int = 8, device: str | None = None):
        from alignkit.data.tokenize import ChatTokenizer
        from alignkit.models import load_reward_model, load_tokenizer
        from alignkit.train.run import RewardForward

        self.device = device or _device()
        self.tok = load_tokenizer(model_dir)
        self.chat = ChatTokenizer(self.tok)
        self.model = RewardForward(load_reward_model(model_dir, device=self.device)).eval()
        self.batch_size = batch_size
        self.pad_id = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.tok.eos_token_id

    def _ids(self, prompt: Text, completion: Text) -> list[int]:
        conversational = isinstance(prompt, list)
        if conversational and isinstance(completion, str):
            completion = [{"role": "assistant", "content": completion}]
        return self.chat.prompt_ids(prompt, conversational) + self.chat.completion_ids(prompt, completion, conversational)

    @torch.no_grad()
    def score(self, prompts: Sequence[Text], completions: Sequence[Text]) -> list[float]:
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        seqs = [self._ids(p, c) for p, c in zip(prompts, completions, strict=True)]
        out: list[float] = []
        for i in range(0, len(seqs), self.batch_size):
            chunk = seqs[i : i + self.batch_size]
            width = max(len(s) for s in chunk)
            ids = torch.full((len(chunk), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for j, s in enumerate(chunk):
                ids[j, : len(s)] = torch.tensor(s)
                mask[j, : len(s)] = 1
            out += self.model(ids.to(self.device), mask.to(self.device)).float().cpu().tolist()
        return out


class ProcessRewardScorer:
    """Per-step probabilities and aggregated solution scores with a PRM directory."""

    def __init__(self, model_dir: str, batch_size: int = 8, device: str | None = None,
                 aggregation: str | None = None):
        from alignkit.models import load_reward_model, load_tokenizer
        from alignkit.train.prm import PRMForward, read_prm_settings

        self.settings: dict[str, Any] = read_prm_settings(model_dir)
        self.aggregation = aggregation or self.settings["aggregation"]
        self.device = device or _device()
        self.tok = load_tokenizer(model_dir)
        self.model = PRMForward(load_reward_model(model_dir, device=self.device)).eval()
        self.batch_size = batch_size
        self.pad_id = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.tok.eos_token_id

    def step_probs(self, prompts: Sequence[str], steps: Sequence[Sequence[str]]) -> list[list[float]]:
        """``sigmoid`` of the head at each step end; a solution with no step gets ``[]``."""
        from alignkit.train.prm import StepExample, encode_steps, step_probabilities

        examples, where = [], []
        for i, (p, ss) in enumerate(zip(prompts, steps, strict=True)):
            if ss:
                ids, pos = encode_steps(self.tok, p, list(ss), self.settings["step_separator"],
                                        self.settings["chat_template"])
                examples.append(StepExample(i, ids, pos, [0.0] * len(pos)))
                where.append(i)
        out: list[list[float]] = [[] for _ in prompts]
        if examples:
            for i, probs in zip(where, step_probabilities(self.model, examples, self.pad_id, self.batch_size,
                                                          self.device), strict=True):
                out[i] = probs
        return out

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float | None]:
        """Aggregated score of each solution text (None for a text with no step)."""
        from alignkit.losses import aggregate_step_scores
        from alignkit.train.prm import split_steps

        steps = [split_steps(c, self.settings["step_separator"]) for c in completions]
        out: list[float | None] = []
        for probs in self.step_probs(prompts, steps):
            if not probs:
                out.append(None)
                continue
            t = torch.tensor([probs])
            out.append(float(aggregate_step_scores(t, torch.ones_like(t, dtype=torch.bool), self.aggregation)[0]))
        return out
