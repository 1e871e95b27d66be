"""TextDeltas: streamed text deltas join to exactly the final text, whatever the token boundaries."""

from __future__ import annotations

import pytest

from alignkit.generate.engine import cut_at_stop
from alignkit.generate.streaming import TextDeltas


def _stream(tokenizer, text: str, stop: list[str]) -> tuple[list[str], str, list[str]]:
    """Feed ``text``'s tokens one at a time: (deltas while decoding, final text, text sent after each step)."""
    ids = tokenizer(text, add_special_tokens=False).input_ids
    full = tokenizer.decode(ids, skip_special_tokens=True)
    cut = cut_at_stop(full, stop)
    final = full if cut is None else full[:cut]
    deltas, sent, stream = [], [], TextDeltas(tokenizer, stop)
    for tok in ids:
        deltas.append(stream.add([tok]))
        sent.append(stream.sent)
    deltas.append(stream.finish(final))
    return deltas, final, sent


@pytest.mark.parametrize("text", ["Hello world, how are you? 😀 naïve café.\nNext", "日本語のテキスト", "  two  spaces  "])
def test_deltas_join_to_the_text_and_never_split_a_character(tokenizer, text):
    deltas, final, _ = _stream(tokenizer, text, [])
    assert "".join(deltas) == final == text
    assert len([d for d in deltas if d]) > 1  # incremental, not one blob at the end
    assert not any("\ufffd" in d for d in deltas)  # a token ending inside a character waits for the next


@pytest.mark.parametrize(
    "text, stop, expected",
    [
        ("say hello world, then hello world! more", ["world!"], "say hello world, then hello "),
        ("日本語のテキストです", ["テキ"], "日本語の"),
        ("abc [[end]] and after", ["zzz", "[[e"], "abc "),
        ("no stop in here", ["stop!"], "no stop in here"),
    ],
)
def test_nothing_from_a_stop_string_on_is_ever_sent(tokenizer, text, stop, expected):
    deltas, final, sent = _stream(tokenizer, text, stop)
    assert final == expected and "".join(deltas) == expected
    assert all(expected.startswith(s) for s in sent)  # at every step, only text of the final answer
    assert len([d for d in deltas[:-1] if d]) > 1  # and it was sent while decoding, not only at the end


def test_a_stop_prefix_is_held_back_only_until_it_cannot_be_one(tokenizer):
    """'world,' cannot become 'world!': it is released as soon as the ',' arrives."""
    _, _, sent = _stream(tokenizer, "hello world, and world!", ["world!"])
    first_comma = next(s for s in sent if "," in s)
    assert first_comma.startswith("hello world,")
    assert all(not s.endswith(("w", "wo", "wor", "worl", "world")) for s in sent)
