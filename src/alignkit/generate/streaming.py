"""Incremental detokenisation for streamed completions: tokens in, text deltas out.

A token is not a piece of text: byte-level BPE tokens can end inside a multi-byte character, and a
stop string can span several tokens. :class:`TextDeltas` therefore decodes the completion's whole
token list after each new token (the same ``decode`` the engine uses for the final text) and sends
only the part of the new text that can no longer change:

* trailing U+FFFD replacement characters (an unfinished UTF-8 sequence) wait for the next token;
* text that could still be the start of a stop string waits until it is known not to be one, and
  nothing from the first complete stop string on is ever sent.

This relies on decoding being prefix-stable (the decoding of a token list starts with the decoding of
any of its prefixes, up to an unfinished character), which holds for byte-level BPE tokenizers
(transformers does not apply its space clean-up to them); should a decode ever rewrite text already
sent, nothing more is sent until :meth:`TextDeltas.finish`.

:meth:`TextDeltas.finish` sends whatever was held back once the final text is known, so the deltas
always join to exactly the completion's text (the non-streamed answer for the same seed).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from alignkit.data.toolcalls import partial_marker_length
from alignkit.generate.engine import cut_at_stop


class TextDeltas:
    """The text of one completion as it grows, cut into deltas that are safe to send."""

    def __init__(self, tokenizer: Any, stop: Sequence[str] = ()):
        self.tokenizer = tokenizer
        self.stop = list(stop)
        self.tokens: list[int] = []
        self.sent = ""  # the text sent so far: always a prefix of the final text
        self.stopped = False  # a stop string was seen: nothing more is sent before finish()

    def add(self, token_ids: Sequence[int]) -> str:
        """Append tokens; return the new text that is safe to send now (often ``""``)."""
        if self.stopped:
            return ""
        self.tokens.extend(token_ids)
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        cut = cut_at_stop(text, self.stop) if self.stop else None
        if cut is not None:
            self.stopped = True
            safe = cut
        else:
            stable = text.rstrip("\ufffd")
            safe = len(stable) - partial_marker_length(stable, self.stop)
        if safe <= len(self.sent) or not text.startswith(self.sent):
            return ""
        delta = text[len(self.sent) : safe]
        self.sent += delta
        return delta

    def finish(self, final_text: str) -> str:
        """The rest of the completion once its final text is known (held-back text included)."""
        rest = final_text[len(self.sent) :]
        self.sent += rest
        return rest
