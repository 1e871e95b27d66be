"""Tool calls in chat: the one chat renderer, the default tool-call format and its parser.

Conversations follow OpenAI's format: a ``tools`` list of JSON-schema functions, assistant messages
with ``tool_calls`` (``id``, ``type: function``, ``function.name``, ``function.arguments`` as a JSON
string) and ``tool`` messages answering a call by its ``tool_call_id`` (validated in
:mod:`alignkit.data.records`).

:func:`render_chat` is the one renderer of a conversation, used by training (:mod:`alignkit.data.tokenize`)
and inference (:func:`alignkit.generate.engine.render_prompt`):

* a chat template that takes ``tools`` (its Jinja source uses the variable) renders the conversation
  itself: ``apply_chat_template(messages, tools=...)``, with each call's arguments as an object, as
  such templates expect;
* any other template (SmolLM2's ChatML, the tiny test tokenizer's) gets the **default format**: the
  tool declarations are appended to the system turn (a system turn is added when there is none), each
  call is written into the assistant turn as ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``
  (one per line, after the message's text) and tool results stay ``tool`` turns;
* a conversation without tools renders exactly as before (``apply_chat_template(messages)``).

:func:`parse_tool_calls` is the inverse of the default format (and reads the ``<tool_call>`` blocks of
Hermes/Qwen-style native templates); :class:`ToolCallParser` does the same incrementally for streamed
text. A malformed call never raises: it stays in the text and is reported as the result's ``error``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

CALL_OPEN = "<tool_call>"
CALL_CLOSE = "</tool_call>"

TOOLS_PREAMBLE = (
    "# Tools\n\nYou may call one or more functions to assist with the user query. "
    "The functions available are declared in <tools></tools>:\n<tools>\n"
)
TOOLS_INSTRUCTIONS = (
    "\n</tools>\n\nTo call a function, write one line per call in your reply:\n"
    '<tool_call>{"name": <function-name>, "arguments": <arguments-json-object>}</tool_call>'
)


@dataclass
class Conversation:
    """A chat prompt with the tools it may call: what the engine renders when a request has tools."""

    messages: list[dict]
    tools: list[dict] | None = None


def template_source(tokenizer: Any) -> str:
    """The tokenizer's chat template text ('' when it has none; all named templates joined)."""
    template = getattr(tokenizer, "chat_template", None) or ""
    return "\n".join(template.values()) if isinstance(template, dict) else template


def template_supports_tools(tokenizer: Any) -> bool:
    """Whether the chat template renders ``tools`` itself: its Jinja code (not its text) names ``tools``.

    The template is lexed, not parsed, so tags that only transformers knows (``{% generation %}``) do not
    matter; a ``tools`` in the literal text around the code does not count."""
    return _names_tools(template_source(tokenizer))


@functools.lru_cache(maxsize=16)
def _names_tools(source: str) -> bool:
    import jinja2

    return any(kind == "name" and value == "tools" for _line, kind, value in jinja2.Environment().lex(source))


def format_tool_call(call: dict) -> str:
    """One OpenAI tool call in the default format: ``<tool_call>{"name": .., "arguments": {..}}</tool_call>``."""
    fn = call["function"]
    body = {"name": fn["name"], "arguments": json.loads(fn["arguments"])}
    return f"{CALL_OPEN}{json.dumps(body, ensure_ascii=False)}{CALL_CLOSE}"


def forced_call_prefix(name: str | None) -> str:
    """The start of a call in the default format: any call (``name=None``) or one to function ``name``."""
    if name is None:
        return CALL_OPEN
    return CALL_OPEN + json.dumps({"name": name}, ensure_ascii=False)[:-1] + ', "arguments":'


def default_format(messages: list[dict], tools: list[dict] | None) -> list[dict]:
    """The conversation as plain ``{role, content}`` messages in the default tool format."""
    out = [{"role": m["role"], "content": _default_content(m)} for m in messages]
    if tools:
        declared = TOOLS_PREAMBLE + "\n".join(json.dumps(t, ensure_ascii=False) for t in tools) + TOOLS_INSTRUCTIONS
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{declared}"}
        else:
            out.insert(0, {"role": "system", "content": declared})
    return out


def _default_content(message: dict) -> str:
    calls = [format_tool_call(c) for c in message.get("tool_calls") or []]
    text = message.get("content") or ""
    return "\n".join(([text] if text else []) + calls)


def _native_format(messages: list[dict]) -> list[dict]:
    """Messages for a template that renders tools: each call's arguments as an object (as HF templates expect)."""
    out = []
    for m in messages:
        if m.get("tool_calls"):
            calls = [{**c, "function": {"name": c["function"]["name"],
                                        "arguments": json.loads(c["function"]["arguments"])}}
                     for c in m["tool_calls"]]
            m = {**m, "tool_calls": calls}
        out.append(m)
    return out


def uses_tools(messages: list[dict], tools: list[dict] | None) -> bool:
    return bool(tools) or any(m.get("tool_calls") or m.get("tool_call_id") for m in messages)


def render_chat(tokenizer: Any, messages: list[dict], tools: list[dict] | None = None, *,
                add_generation_prompt: bool = False, continue_final_message: bool = False) -> str:
    """Render ``messages`` (and ``tools``) with the tokenizer's chat template: see the module docstring."""
    kwargs: dict[str, Any] = {"tokenize": False}
    if continue_final_message:
        kwargs["continue_final_message"] = True
    else:
        kwargs["add_generation_prompt"] = add_generation_prompt
    if not uses_tools(messages, tools):
        return tokenizer.apply_chat_template(messages, **kwargs)
    if template_supports_tools(tokenizer):
        return tokenizer.apply_chat_template(_native_format(messages), tools=tools or None, **kwargs)
    return tokenizer.apply_chat_template(default_format(messages, tools), **kwargs)


@dataclass
class ParsedToolCalls:
    """A model's reply split into text and OpenAI ``tool_calls``.

    ``content``: the text outside the calls (whitespace next to a call dropped; a malformed call stays
    here as written); ``error``: None, or what was wrong with the first malformed call."""

    content: str
    tool_calls: list[dict] = field(default_factory=list)
    error: str | None = None


class ToolCallParser:
    """Incremental :func:`parse_tool_calls`: feed text as it is generated, get events as soon as they are safe.

    :meth:`feed` and :meth:`finish` return ``("content", text)`` and ``("call", tool_call)`` events; the
    content events join to :attr:`result` ``.content``. Text that may still start a call, and
    whitespace that may precede one, is held back until it is known.
    """

    def __init__(self, tools: list[dict] | None = None, make_id: Callable[[int], str] = lambda i: f"call_{i}"):
        self.declared = None if tools is None else {t["function"]["name"] for t in tools}
        self.make_id = make_id
        self.result = ParsedToolCalls("")
        self._buf = ""  # unread text
        self._in_call = False
        self._held = ""  # whitespace held back: dropped if a call follows
        self._gap = ""  # the whitespace dropped before the open call: restored if the call is malformed
        self._after_call = False  # drop the whitespace that starts the text after a call

    def feed(self, text: str) -> list[tuple[str, Any]]:
        self._buf += text
        events: list[tuple[str, Any]] = []
        while True:
            if self._in_call:
                end = self._buf.find(CALL_CLOSE)
                if end < 0:
                    return events
                body, self._buf = self._buf[:end], self._buf[end + len(CALL_CLOSE):]
                self._in_call = False
                events += self._close_call(body)
                continue
            start = self._buf.find(CALL_OPEN)
            if start < 0:
                keep = partial_marker_length(self._buf, [CALL_OPEN])
                safe, self._buf = self._buf[: len(self._buf) - keep], self._buf[len(self._buf) - keep:]
                events += self._text(safe, before_call=False)
                return events
            events += self._text(self._buf[:start], before_call=True)
            self._buf, self._in_call = self._buf[start + len(CALL_OPEN):], True

    def finish(self) -> list[tuple[str, Any]]:
        """The end of the reply: an unclosed call is an error and stays text."""
        if self._in_call:
            self._in_call = False
            self._error("a <tool_call> is not closed")
            return self._content(self._gap + CALL_OPEN + self._buf, reset=True)
        rest, self._buf = self._buf, ""
        events = self._text(rest, before_call=False)
        if self._held and not self._after_call:
            events += self._content(self._held, reset=True)
        return events

    def _text(self, text: str, before_call: bool) -> list[tuple[str, Any]]:
        if self._after_call:
            text = text.lstrip()
            if not text and not before_call:
                return []
            self._after_call = False
        if before_call:  # whitespace right before a call is dropped (kept aside in case the call is malformed)
            stripped = text.rstrip()
            self._gap = text[len(stripped):] if stripped else self._held + text
            return self._content(self._held + stripped if stripped else "", reset=True)
        stripped = text.rstrip()
        if not stripped:
            self._held += text
            return []
        events = self._content(self._held + stripped)
        self._held = text[len(stripped):]
        return events

    def _content(self, text: str, reset: bool = False) -> list[tuple[str, Any]]:
        if reset:
            self._held = ""
        if not text:
            return []
        self.result.content += text
        return [("content", text)]

    def _close_call(self, body: str) -> list[tuple[str, Any]]:
        call, problem = self._parse_call(body)
        if call is None:
            self._error(problem)
            self._after_call = False
            return self._content(self._gap + CALL_OPEN + body + CALL_CLOSE)
        self.result.tool_calls.append(call)
        self._after_call = True
        return [("call", call)]

    def _parse_call(self, body: str) -> tuple[dict | None, str]:
        try:
            value = json.loads(body)
        except json.JSONDecodeError as exc:
            return None, f"tool call is not valid JSON: {exc.msg} (column {exc.colno})"
        if not isinstance(value, dict) or not isinstance(value.get("name"), str):
            return None, 'tool call must be a JSON object with a string "name"'
        args = value.get("arguments", {})
        if not isinstance(args, dict):
            return None, f'tool call {value["name"]!r}: "arguments" must be a JSON object'
        if self.declared is not None and value["name"] not in self.declared:
            return None, f"tool call names an undeclared function {value['name']!r}"
        index = len(self.result.tool_calls)
        return {"id": self.make_id(index), "type": "function",
                "function": {"name": value["name"], "arguments": json.dumps(args, ensure_ascii=False)}}, ""

    def _error(self, problem: str) -> None:
        if self.result.error is None:
            self.result.error = problem


def parse_tool_calls(text: str, tools: list[dict] | None = None,
                     make_id: Callable[[int], str] = lambda i: f"call_{i}") -> ParsedToolCalls:
    """Split a reply into text and tool calls (the inverse of the default format; never raises).

    With ``tools``, a call to a function not among them is malformed."""
    parser = ToolCallParser(tools, make_id)
    parser.feed(text)
    parser.finish()
    return parser.result


def partial_marker_length(text: str, markers: list[str]) -> int:
    """Length of the longest end of ``text`` that is a proper prefix of one of ``markers`` (text to hold back)."""
    best = 0
    for p in markers:
        for k in range(min(len(p) - 1, len(text)), best, -1):
            if text.endswith(p[:k]):
                best = k
                break
    return best
