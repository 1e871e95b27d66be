"""Tokenisation at the prompt/response boundary, and the degenerate-row policy.

The prompt and each completion are tokenised **separately**:

* conversational rows: ``prompt_ids`` is exactly the inference render, i.e. the chat template with
  ``add_generation_prompt=True``; the completion is the rest of the full-conversation render
  (which must start with the prompt render — templates that rewrite earlier turns are refused),
  cut right after the end-of-turn/EOS token, since generation stops there;
* multi-turn completions (tool use: assistant turn, tool result, assistant turn ...): each assistant
  turn is cut the same way, and the text between turns (tool results, user turns, the next header) is
  kept as context with no loss; the prefix before every assistant turn is exactly the inference render
  at that point (``data.train_on`` chooses all assistant turns or the last as targets);
* plain rows: ``prompt_ids = tok(prompt)`` and ``completion_ids = tok(completion) + [eos]``.

Both training and inference render with :func:`~alignkit.data.toolcalls.render_chat` (tools included).
So the model is trained on exactly the token prefix it sees at generation time; a joint
tokenisation of prompt+completion can merge tokens across the boundary and silently shift it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from alignkit.config import StrictModel
from alignkit.data.rows import Example, Messages, Text, text_of
from alignkit.data.toolcalls import render_chat
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
    completion_masks: list[list[bool] | None] | None = None
    """Per completion, which of its tokens are trained (None: all): a multi-turn completion's tool results,
    user turns and excluded assistant turns are context, not targets."""


@dataclass
class DataSummary:
    """Counts of what the policy did; printed and saved with every run."""

    rows: int = 0
    kept: int = 0
    events: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict:
        return {"rows": self.rows, "kept": self.kept, **dict(sorted(self.events.items()))}


TrainOn = Literal["all_assistant", "last_assistant"]


class ChatTokenizer:
    """Prompt and completion tokenisation with the model's own chat template (:func:`render_chat`, the
    renderer inference uses too), tools included."""

    def __init__(self, tokenizer):
        self.tok = tokenizer
        if tokenizer.eos_token_id is None:
            raise TemplateError("tokenizer has no EOS token; cannot mark the end of a completion")

    def render_prompt(self, prompt: Text, conversational: bool, tools: list[dict] | None = None) -> str:
        if not conversational:
            return prompt  # type: ignore[return-value]
        if not getattr(self.tok, "chat_template", None):
            raise TemplateError("conversational rows need a tokenizer with a chat template")
        return render_chat(self.tok, list(prompt), tools, add_generation_prompt=True)

    def prompt_ids(self, prompt: Text, conversational: bool, tools: list[dict] | None = None) -> list[int]:
        text = self.render_prompt(prompt, conversational, tools)
        # Chat renders already contain their special tokens; plain prompts get the tokenizer's BOS rule.
        return self.tok(text, add_special_tokens=not conversational)["input_ids"]

    def completion_text(self, prompt: Text, completion: Text, conversational: bool,
                        tools: list[dict] | None = None) -> str:
        if not conversational:
            return completion  # type: ignore[return-value]
        return "".join(text for text, _ in self.completion_segments(prompt, completion, tools, "all_assistant"))

    def completion_segments(self, prompt: Messages, completion: Messages, tools: list[dict] | None,
                            train_on: TrainOn) -> list[tuple[str, bool]]:
        """The completion's text as ``(text, trained)`` pieces: each assistant turn (up to and including
        its end-of-turn/EOS token) is one piece, trained unless ``train_on`` excludes it; what lies between
        (the end of a turn, tool results, user turns, the next turn's header) is context.

        Piece boundaries are the inference renders: the text before each assistant turn is exactly
        ``render_chat(conversation so far, add_generation_prompt=True)``, the prompt generation sees."""
        msgs = list(prompt)
        done = self.render_prompt(msgs, True, tools)
        turns = [i for i, m in enumerate(completion) if m["role"] == "assistant"]
        if not turns or turns[-1] != len(completion) - 1:
            raise TemplateError("a conversational completion must end with an assistant message")
        pieces: list[tuple[str, bool]] = []
        for i, msg in enumerate(completion):
            msgs.append(msg)
            if msg["role"] != "assistant":
                continue
            before = done if i == 0 else self.render_prompt(msgs[:-1], True, tools)
            turn = render_chat(self.tok, msgs, tools)
            if not before.startswith(done) or not turn.startswith(before):
                raise TemplateError(
                    "the chat template renders the conversation so that it does not start with the "
                    "inference render of its prompt (add_generation_prompt=True); training on it would "
                    "teach a different prefix than the one generation uses"
                )
            if len(before) > len(done):
                pieces.append((before[len(done):], False))
            reply = turn[len(before):]
            cut = reply.rfind(self.tok.eos_token)
            reply = reply[: cut + len(self.tok.eos_token)] if cut >= 0 else reply
            pieces.append((reply, train_on == "all_assistant" or i == turns[-1]))
            done = before + reply
        return pieces

    def completion_tokens(self, prompt: Text, completion: Text, conversational: bool,
                          tools: list[dict] | None = None,
                          train_on: TrainOn = "all_assistant") -> tuple[list[int], list[bool] | None]:
        """The completion's token ids (ending with EOS) and which of them are trained (None: all)."""
        if not conversational:
            pieces = [(completion, True)]
        else:
            pieces = self.completion_segments(prompt, completion, tools, train_on)  # type: ignore[arg-type]
        ids: list[int] = []
        mask: list[bool] = []
        for text, trained in pieces:  # each piece tokenised alone: its first token starts where inference's does
            piece = self.tok(text, add_special_tokens=False)["input_ids"]
            ids += piece
            mask += [trained] * len(piece)
        if not ids or ids[-1] != self.tok.eos_token_id:
            ids.append(self.tok.eos_token_id)
            mask.append(True)
        return ids, None if all(mask) else mask

    def completion_ids(self, prompt: Text, completion: Text, conversational: bool,
                       tools: list[dict] | None = None) -> list[int]:
        return self.completion_tokens(prompt, completion, conversational, tools)[0]


def _is_empty(completion: Text) -> bool:
    return not text_of(completion).strip()


def tokenize_examples(
    examples: list[Example], tokenizer, policy: DataPolicy, pairwise: bool = False,
    train_on: TrainOn = "all_assistant",
) -> tuple[list[TokenizedExample], DataSummary]:
    """Tokenise rows, applying ``policy``; ``pairwise`` enables the identical-pair check; ``train_on``:
    which assistant turns of a multi-turn completion are targets (see :meth:`ChatTokenizer.completion_segments`)."""
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
        p_ids = ct.prompt_ids(ex.prompt, ex.conversational, ex.tools)
        if len(p_ids) > policy.max_prompt_length:
            if policy.on_long_prompt == "truncate_left":
                summary.events["truncated_prompt"] += 1
                p_ids = p_ids[-policy.max_prompt_length:]
            else:
                degenerate("dropped_long_prompt", policy.on_long_prompt, ex,
                           f"prompt has {len(p_ids)} tokens > max_prompt_length {policy.max_prompt_length}")
                continue
        c_ids, masks = map(list, zip(*(ct.completion_tokens(ex.prompt, c, ex.conversational, ex.tools, train_on)
                                         for c in ex.completions), strict=True))
        budget = policy.max_length - len(p_ids)
        if any(len(c) > budget for c in c_ids):
            if policy.on_long_completion == "truncate" and budget > 0:
                summary.events["truncated_completion"] += 1
                c_ids = [c[:budget] for c in c_ids]
                masks = [m if m is None else m[:budget] for m in masks]
                if any(m is not None and not any(m) for m in masks):  # only context left: nothing to train
                    degenerate("dropped_long_sequence", "error" if policy.on_long_completion == "error" else "drop",
                               ex, f"no trained token within max_length {policy.max_length}")
                    continue
                if pairwise and c_ids[0] == c_ids[1]:
                    degenerate("dropped_identical_pair", policy.on_identical_pair, ex,
                               "chosen == rejected after truncation")
                    continue
            else:
                action = "error" if policy.on_long_completion == "error" else "drop"
                degenerate("dropped_long_sequence", action, ex,
                           f"sequence longer than max_length {policy.max_length}")
                continue
        out.append(TokenizedExample(ex.index, p_ids, c_ids, ex.rewards,
                                    masks if any(m is not None for m in masks) else None))
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


def conversation_parity_report(tokenizer, conversations: list[tuple[Messages, list[dict] | None]],
                               encode_inference: Callable[[Messages, list[dict] | None], list[int]]) -> list[str]:
    """Check multi-turn (tool) conversations: before **every** assistant turn, the training ids
    (:func:`tokenize_examples`' prompt and completion tokens) equal ``encode_inference(messages so far,
    tools)``, the ids generation feeds the model; in the default tool format each trained turn also
    parses back (:func:`~alignkit.data.toolcalls.parse_tool_calls`) into the message's text and tool calls.

    Returns a list of failure descriptions (empty when every conversation passes)."""
    from alignkit.data.toolcalls import parse_tool_calls, template_supports_tools

    ct = ChatTokenizer(tokenizer)
    default_format = not template_supports_tools(tokenizer)
    failures = []
    for i, (messages, tools) in enumerate(conversations):
        first = next((j for j, m in enumerate(messages) if j > 0 and m["role"] == "assistant"), None)
        if first is None:
            failures.append(f"conversation {i}: no assistant turn after a prompt")
            continue
        prompt, completion = messages[:first], messages[first:]
        try:
            pieces = ct.completion_segments(prompt, completion, tools, "all_assistant")
        except TemplateError as exc:
            failures.append(f"conversation {i}: {exc}")
            continue
        ids = ct.prompt_ids(prompt, True, tools)
        turns = iter(j for j, m in enumerate(messages) if j >= first and m["role"] == "assistant")
        for text, trained in pieces:
            piece = tokenizer(text, add_special_tokens=False)["input_ids"]
            if trained:
                j = next(turns)
                failures += _turn_parity(tokenizer, i, j, ids, encode_inference(messages[:j], tools))
                if default_format:
                    failures += _turn_parses_back(i, j, text, messages[j], tools, tokenizer, parse_tool_calls)
            ids = ids + piece
    return failures


def _turn_parity(tokenizer, i: int, j: int, train_ids: list[int], reference: list[int]) -> list[str]:
    if list(reference) == train_ids:
        return []
    k = next((n for n, (a, b) in enumerate(zip(reference, train_ids, strict=False)) if a != b),
             min(len(reference), len(train_ids)))
    return [f"conversation {i}, message {j}: training ids before this assistant turn differ from the inference "
            f"render at token {k}: inference {tokenizer.convert_ids_to_tokens(list(reference[k:k + 3]))} vs "
            f"training {tokenizer.convert_ids_to_tokens(train_ids[k:k + 3])}"]


def _turn_parses_back(i: int, j: int, text: str, message: dict, tools, tokenizer, parse) -> list[str]:
    eos = tokenizer.eos_token
    parsed = parse(text[: -len(eos)] if text.endswith(eos) else text, tools)
    want = [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in message.get("tool_calls") or []]
    got = [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in parsed.tool_calls]
    if parsed.error or got != want or parsed.content != message["content"]:
        return [f"conversation {i}, message {j}: the trained turn does not parse back into its message "
                f"(error: {parsed.error}; calls {got} vs {want}; text {parsed.content!r} vs {message['content']!r})"]
    return []
