"""SciGLM's classifier filter sees exactly the token ids ``alignkit sft`` trains it on (issue 16).

The classifier is a causal LM fine-tuned with ``alignkit sft`` on plain rows
``{prompt: question【答案】solution, completion: "True" | "False"}``; scoring must feed it the prompt as
training tokenised it (with the tokenizer's special tokens: a BOS here) and read the label tokens
training put right after it. Over-long inputs keep their head, as SciGLM's ``rm_eval.py`` does.
"""

from __future__ import annotations

import json

import pytest
import torch

from alignkit.pipelines.self_reflect import CLASSIFIER_SEPARATOR, ClassifierSection, classifier_scores

LABELS = {"true_token": "T", "false_token": "F"}  # one token each in the tiny tokenizer
ROWS = [{"question": "What is 2 + 2?", "solution": "2 + 2 = 4. The answer is 4."},
        {"question": "What is 3 * 3?", "solution": "3 * 3 = 9. The answer is 9."}]


@pytest.fixture()
def bos_classifier(tmp_path, tokenizer):
    """A tiny random classifier whose tokenizer puts a BOS before every plain text (like Llama's)."""
    from tokenizers.processors import TemplateProcessing

    from alignkit.models import tiny_random_causal_lm

    tok = tokenizer.__class__(tokenizer_object=tokenizer.backend_tokenizer, bos_token=tokenizer.bos_token,
                              eos_token=tokenizer.eos_token, pad_token=tokenizer.pad_token,
                              unk_token=tokenizer.unk_token, chat_template=tokenizer.chat_template)
    tok.backend_tokenizer.post_processor = TemplateProcessing(
        single=f"{tok.bos_token} $A", special_tokens=[(tok.bos_token, tok.bos_token_id)])
    model, tok = tiny_random_causal_lm(tok)
    path = tmp_path / "classifier"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def _training_ids(tmp_path, model_dir: str, rows: list[dict], label: str) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, completion ids) of each training row, through `alignkit sft`'s reader and tokeniser."""
    from alignkit.data.rows import read_rows
    from alignkit.data.tokenize import DataPolicy, tokenize_examples
    from alignkit.models import load_tokenizer

    path = tmp_path / f"train_{label}.jsonl"
    path.write_text("".join(json.dumps({"prompt": r["question"] + CLASSIFIER_SEPARATOR + r["solution"],
                                        "completion": label}) + "\n" for r in rows))
    policy = DataPolicy(max_length=4096, max_prompt_length=4096)
    examples, _ = tokenize_examples(read_rows(path, "sft"), load_tokenizer(model_dir), policy)
    return [(e.prompt_ids, e.completion_ids[0]) for e in examples]


def _score_recording_inputs(monkeypatch, cfg: ClassifierSection, rows: list[dict]):
    """classifier_scores on the real model, recording the input ids of every forward."""
    import alignkit.models as models

    seen, real = [], models.load_causal_lm

    def load(name, *args, **kwargs):
        model = real(name, *args, **kwargs)
        model.register_forward_pre_hook(lambda m, args, kwargs: seen.append(
            (args[0] if args else kwargs["input_ids"])[0].tolist()), with_kwargs=True)
        return model

    monkeypatch.setattr(models, "load_causal_lm", load)
    return classifier_scores(cfg, rows), seen


def test_scoring_sees_the_training_token_ids(tmp_path, monkeypatch, bos_classifier):
    from alignkit.models import load_causal_lm, load_tokenizer

    tok = load_tokenizer(bos_classifier)
    assert tok("x").input_ids[0] == tok.bos_token_id  # the tokenizer under test does add a BOS
    good = _training_ids(tmp_path, bos_classifier, ROWS, LABELS["true_token"])
    bad = _training_ids(tmp_path, bos_classifier, ROWS, LABELS["false_token"])
    scores, seen = _score_recording_inputs(monkeypatch, ClassifierSection(model=bos_classifier, **LABELS), ROWS)
    assert seen == [p for p, _ in good] and all(p[0] == tok.bos_token_id for p in seen)
    # the score compares the first completion tokens training teaches after that prompt
    model = load_causal_lm(bos_classifier)
    for (prompt, true_ids), (_, false_ids), score in zip(good, bad, scores, strict=True):
        with torch.no_grad():
            probs = model(torch.tensor([prompt])).logits[0, -1].float().softmax(-1)
        assert score == pytest.approx(float(probs[true_ids[0]] - probs[false_ids[0]]), abs=1e-6)


@pytest.mark.parametrize("overflow", ["keep_head", "keep_tail"])
def test_over_long_inputs_keep_the_head_by_default(tmp_path, monkeypatch, bos_classifier, overflow):
    long_row = [{"question": "Add up the numbers " + " + ".join(str(i) for i in range(40)) + ".",
                 "solution": "Their sum is 780. The answer is 780."}]
    (full, _), = _training_ids(tmp_path, bos_classifier, long_row, LABELS["true_token"])
    default = ClassifierSection(model=bos_classifier, max_length=16, **LABELS)
    assert default.overflow == "keep_head"  # SciGLM's rm_eval.py: the tokenizer truncates on the right
    cfg = default.model_copy(update={"overflow": overflow})
    _, seen = _score_recording_inputs(monkeypatch, cfg, long_row)
    assert len(full) > 16
    assert seen == [full[:16] if overflow == "keep_head" else full[-16:]]
