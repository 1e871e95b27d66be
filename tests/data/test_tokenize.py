"""Tokenisation at the prompt/response boundary and the degenerate-row policy."""

import pytest

from alignkit.data.batching import by_completion, collate
from alignkit.data.rows import Example
from alignkit.data.tokenize import (
    ChatTokenizer,
    DataPolicy,
    TemplateError,
    template_parity_report,
    tokenize_examples,
)
from alignkit.errors import DataError

USER = [{"role": "user", "content": "What is 2+2?"}]


def test_prompt_ids_equal_inference_render(tokenizer):
    ct = ChatTokenizer(tokenizer)
    ref = tokenizer.apply_chat_template(USER, tokenize=True, add_generation_prompt=True)
    ref = ref["input_ids"] if hasattr(ref, "keys") else ref
    assert ct.prompt_ids(USER, True) == list(ref)


def test_completion_ends_at_eos_without_template_tail(tokenizer):
    ct = ChatTokenizer(tokenizer)
    ids = ct.completion_ids(USER, [{"role": "assistant", "content": "4"}], True)
    assert tokenizer.convert_ids_to_tokens(ids) == ["4", "<|im_end|>"]
    # prompt + completion is exactly the full conversation render minus the template's trailing newline
    full = tokenizer.apply_chat_template(USER + [{"role": "assistant", "content": "4"}], tokenize=False)
    assert tokenizer.decode(ct.prompt_ids(USER, True) + ids) == full.rstrip("\n")


def test_plain_rows_get_eos(tokenizer):
    ct = ChatTokenizer(tokenizer)
    ids = ct.completion_ids("2+2=", " 4", False)
    assert ids[-1] == tokenizer.eos_token_id


def test_template_parity_passes_for_embedded(embedded_tokenizer):
    assert template_parity_report(embedded_tokenizer, [USER, [{"role": "system", "content": "s"}] + USER]) == []


def test_template_that_rewrites_history_fails(tokenizer):
    import copy

    tok = copy.deepcopy(tokenizer)
    # A template that renders the generation prompt differently from a finished turn.
    tok.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\nThink step by step.\n{% endif %}"
    )
    failures = template_parity_report(tok, [USER])
    assert len(failures) == 1 and "does not start with the inference render" in failures[0]
    with pytest.raises(TemplateError):
        ChatTokenizer(tok).completion_ids(USER, [{"role": "assistant", "content": "4"}], True)


def _ex(i, chosen, rejected, prompt="Q?"):
    return Example(i, prompt, [chosen, rejected], conversational=False)


def test_degenerate_policy_counts(tokenizer):
    rows = [_ex(0, "yes", "no"), _ex(1, "", "no"), _ex(2, "same", "same"), _ex(3, "a " * 50, "b", prompt="p " * 100)]
    pol = DataPolicy(max_length=300, max_prompt_length=20)
    kept, summary = tokenize_examples(rows, tokenizer, pol, pairwise=True)
    assert [k.index for k in kept] == [0]
    assert summary.as_dict() == {"rows": 4, "kept": 1, "dropped_empty_completion": 1, "dropped_identical_pair": 1,
                                 "dropped_long_prompt": 1}


def test_policy_error_and_truncation(tokenizer):
    with pytest.raises(DataError, match=r"row 2: empty completion \(policy: error\)"):
        tokenize_examples([_ex(0, "a", "b"), _ex(1, " ", "b")], tokenizer, DataPolicy(on_empty_completion="error"),
                          pairwise=True)
    kept, summary = tokenize_examples([_ex(0, "word " * 40, "other " * 40)], tokenizer,
                                      DataPolicy(max_length=20, max_prompt_length=10), pairwise=True)
    assert summary.events["truncated_completion"] == 1
    assert all(len(kept[0].prompt_ids) + len(c) == 20 for c in kept[0].completion_ids)


def test_collate_layout_and_mask(tokenizer):
    kept, _ = tokenize_examples([_ex(0, "yes", "no thanks"), _ex(1, "ok", "nope")], tokenizer, DataPolicy(),
                                pairwise=True)
    b = collate(kept, tokenizer.pad_token_id)
    assert b["input_ids"].shape[0] == 4
    # rows 0,1 are the chosen completions of examples 0,1; rows 2,3 the rejected ones
    for row, (ex, c) in enumerate([(0, 0), (1, 0), (0, 1), (1, 1)]):
        n_p, comp = len(kept[ex].prompt_ids), kept[ex].completion_ids[c]
        assert b["loss_mask"][row].nonzero().squeeze(-1).tolist() == list(range(n_p, n_p + len(comp)))
        assert b["input_ids"][row, n_p : n_p + len(comp)].tolist() == comp
    import torch

    flat = torch.arange(4.0)
    assert by_completion(flat, 2).tolist() == [[0.0, 2.0], [1.0, 3.0]]
