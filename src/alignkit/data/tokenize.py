"""Tokenisation at the prompt/response boundary, and the degenerate-row policy.

The prompt and each completion are tokenised **separately**:

* conversational rows: ``prompt_ids`` is exactly the inference render, i.e. the chat template with
  ``add_generation_prompt=True``; the completion is the rest of the full-conversation render
  (which must start with the prompt render — templates that rewrite earlier turns are refused),
  cut right after the end-of-turn/EOS token, since generation stops there;
* plain rows: ``prompt_ids = tok(prompt)`` and ``completion_ids = tok(completion) + [eos]``.

So the model is trained on exactly the token prefix it sees at generation time; a joint
tokenisation of prompt+completion can merge tokens across the boundary and silently shift it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

from alignkit.config import StrictModel
from alignkit.data.rows import Example, Messages, Text, text_of
from alignkit.errors import DataError


class TemplateError(DataError):
    """The chat template cannot give a training render equal to the inference render."""


class DataPolicy(StrictModel):
    """Lengths, and what happens to degenerate rows (each case is counted in the run summary)."""

    max_length: int = 1024
    """Maximum prompt + completion tokens of one sequence."""
    max_prompt_length: int = 768
    """Maximum prompt tokens."""
    on_long_prompt: Literal["drop", "truncate_left", "error"] = "drop"
    """Prompt over ``max_prompt_length``: drop the row, keep its last tokens, or stop with an error."""
    on_long_completion: Literal["truncate", "drop", "error"] = "truncate"
    """Sequence over ``max_length``: cut the completion's tail (its EOS is lost), drop the row, or error."""
    on_empty_completion: Literal["drop", "error"] = "drop"
    """A completion with no text: drop the row or stop with an error."""
    on_identical_pair: Literal["drop", "error"] = "drop"
    """Preference rows whose chosen and rejected are identical (nothing to learn): drop or error."""


@dataclass
class TokenizedExample:
    index: int
    prompt_ids: list[int]
    completion_ids: list[list[int]]
    rewards: list[float] | None = None


@dataclass
class DataSummary:
    """Counts of what the policy did; printed and saved with every run."""

    rows: int = 0
    kept: int = 0
    events: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict:
        return {"rows": self.rows, "kept": self.kept, **dict(sorted(self.events.items()))}


class ChatTokenizer:
    """Prompt and completion tokenisation with the model's own chat template."""

    def __init__(self, tokenizer):
        self.tok = tokenizer
        if tokenizer.eos_token_id is None:
            raise TemplateError("tokenizer has no EOS token; cannot mark the end of a completion")

    def render_prompt(self, prompt: Text, conversational: bool) -> str:
        if not conversational:
            return prompt  # type: ignore[return-value]
        if not getattr(self.tok, "chat_template", None):
            raise TemplateError("conversational rows need a tokenizer with a chat template")
        return self.tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)

    def prompt_ids(self, prompt: Text, conversational: bool) -> list[int]:
        text = self.render_prompt(prompt, conversational)
        # Chat renders already contain their special tokens; plain prompts get the tokenizer's BOS rule.
        return self.tok(text, add_special_tokens=not conversational)["input_ids"]

    def completion_text(self, prompt: Text, completion: Text, conversational: bool) -> str:
        if not conversational:
            return completion  # type: ignore[return-value]
        prompt_text = self.render_prompt(prompt, True)
        full = self.tok.apply_chat_template(list(prompt) + list(completion), tokenize=False)  # type: ignore[arg-type]
        if not full.startswith(prompt_text):
            raise TemplateError(
                "the chat template renders the conversation so that it does not start with the "
                "inference render of its prompt (add_generation_prompt=True); training on it would "
                "teach a different prefix than the one generation uses"
            )
        suffix = full[len(prompt_text):]
        eos = self.tok.eos_token
        cut = suffix.rfind(eos)
        return suffix[: cut + len(eos)] if cut >= 0 else suffix

    def completion_ids(self, prompt: Text, completion: Text, conversational: bool) -> list[int]:
        text = self.completion_text(prompt, completion, conversational)
        ids = self.tok(text, add_special_tokens=False)["input_ids"]
        if not ids or ids[-1] != self.tok.eos_token_id:
            ids = ids + [self.tok.eos_token_id]
        return ids


def _is_empty(completion: Text) -> bool:
    return not text_of(completion).strip()


def tokenize_examples(
    examples: list[Example], tokenizer, policy: DataPolicy, pairwise: bool = False
) -> tuple[list[TokenizedExample], DataSummary]:
    """Tokenise rows, applying ``policy``; ``pairwise`` enables the identical-pair check."""
    ct = ChatTokenizer(tokenizer)
    summary = DataSummary(rows=len(examples))
    out: list[TokenizedExample] = []

    def degenerate(event: str, action: str, ex: Example, detail: str) -> bool:
        summary.events[event] += 1
        if action == "error":
            raise DataError(f"row {ex.index + 1}: {detail} (policy: error)")
        return True

    for ex in examples:
        if any(_is_empty(c) for c in ex.completions):
            degenerate("dropped_empty_completion", policy.on_empty_completion, ex, "empty completion")
            continue
        if pairwise and text_of(ex.completions[0]) == text_of(ex.completions[1]):
            degenerate("dropped_identical_pair", policy.on_identical_pair, ex, "chosen == rejected")
            continue
        p_ids = ct.prompt_ids(ex.prompt, ex.conversational)
        if len(p_ids) > policy.max_prompt_length:
            if policy.on_long_prompt == "truncate_left":
                summary.events["truncated_prompt"] += 1
                p_ids = p_ids[-policy.max_prompt_length:]
            else:
                degenerate("dropped_long_prompt", policy.on_long_prompt, ex,
                           f"prompt has {len(p_ids)} tokens > max_prompt_length {policy.max_prompt_length}")
                continue
        c_ids = [ct.completion_ids(ex.prompt, c, ex.conversational) for c in ex.completions]
        budget = policy.max_length - len(p_ids)
        if any(len(c) > budget for c in c_ids):
            if policy.on_long_completion == "truncate" and budget > 0:
                summary.events["truncated_completion"] += 1
                c_ids = [c[:budget] for c in c_ids]
                if pairwise and c_ids[0] == c_ids[1]:
                    degenerate("dropped_identical_pair", policy.on_identical_pair, ex,
                               "chosen == rejected after truncation")
                    continue
            else:
                action = "error" if policy.on_long_completion == "error" else "drop"
                degenerate("dropped_long_sequence", action, ex,
                           f"sequence longer than max_length {policy.max_length}")
                continue
        out.append(TokenizedExample(ex.index, p_ids, c_ids, ex.rewards))
    summary.kept = len(out)
    return out, summary


def template_parity_report(tokenizer, prompts: list[Messages], completion: str = "Sure.") -> list[str]:
    """Check, token by token, that the training render of each prompt equals the inference render.

    Returns a list of failure descriptions (empty when every prompt passes).
    """
    ct = ChatTokenizer(tokenizer)
    failures = []
    for i, prompt in enumerate(prompts):
        reference = tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True)
        if hasattr(reference, "keys"):  # transformers may return a BatchEncoding
            reference = reference["input_ids"]
        train_ids = ct.prompt_ids(prompt, True)
        try:
            comp = ct.completion_ids(prompt, [{"role": "assistant", "content": completion}], True)
        except TemplateError as exc:
            failures.append(f"prompt {i}: {exc}")
            continue
        if list(reference) != train_ids:
            k = next((j for j, (a, b) in enumerate(zip(reference, train_ids, strict=False)) if a != b),
                     min(len(reference), len(train_ids)))
            failures.append(
                f"prompt {i}: training render differs from inference render at token {k}: "
                f"inference {tokenizer.convert_ids_to_tokens(list(reference[k:k + 3]))} vs "
                f"training {tokenizer.convert_ids_to_tokens(train_ids[k:k + 3])}"
            )
        if comp[-1] != tokenizer.eos_token_id:
            failures.append(f"prompt {i}: completion does not end with EOS {tokenizer.eos_token!r}")
    return failures
