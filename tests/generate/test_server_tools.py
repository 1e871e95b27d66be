"""``alignkit serve`` with tools: a real tool loop through the official ``openai`` client over loopback HTTP.

The engine is scripted (its replies are fixed texts, tokenised by the tiny tokenizer and reported token by
token like the real engine), so the test is deterministic; the prompt it receives is rendered by the real
renderer, which the tests inspect.
"""

from __future__ import annotations

import json

import httpx
import pytest

from alignkit.generate.engine import Completion, GenerationResult, encode_prompt

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
CALL_TEXT = 'Let me check.\n<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
QUESTION = [{"role": "user", "content": "What's the weather in Paris?"}]


def get_weather(city: str) -> str:
    return json.dumps({"city": city, "temp_c": 21})


class ScriptedEngine:
    """Replies with a tool call until the conversation holds a tool result, then with an answer that quotes it.

    A prompt that ends in an assistant prefix (a forced call opening) is continued from that prefix."""

    name = "scripted"

    def __init__(self, tokenizer, reply: str | None = None):
        self.tokenizer, self.reply, self.prompts = tokenizer, reply, []

    @property
    def max_context(self) -> int:
        return 4096

    def generate(self, prompts, params, *, apply_chat_template=True, seeds=None, on_token=None, progress=False):
        results = []
        for r, prompt in enumerate(prompts):
            text, ids = encode_prompt(self.tokenizer, prompt, apply_chat_template)
            self.prompts.append(text)
            messages = prompt.messages if hasattr(prompt, "messages") else prompt
            results.append(GenerationResult(text, len(ids), [self._reply(r, j, messages, on_token)
                                                             for j in range(params.n)]))
        return results

    def _reply(self, r: int, j: int, messages: list[dict], on_token) -> Completion:
        results = [m["content"] for m in messages if m["role"] == "tool"]
        reply = self.reply or (f"The tool says: {results[-1]}" if results else CALL_TEXT)
        if messages[-1]["role"] == "assistant":  # continue the forced opening
            prefix = messages[-1]["content"]
            assert reply.split("\n")[-1].startswith(prefix), (reply, prefix)
            reply = reply.split("\n")[-1][len(prefix):]
        ids = self.tokenizer(reply, add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]
        for tok in ids:
            if on_token is not None:
                on_token(r, j, tok)
        return Completion(reply, ids, "stop")


@pytest.fixture()
def serve(tokenizer):
    """``serve(engine_reply=None)`` -> (base URL, engine): an in-process server over a scripted engine."""
    import contextlib

    from tests.live_server import serve_app_in_thread

    from alignkit.generate.server import create_app

    stack = contextlib.ExitStack()

    def start(reply: str | None = None):
        engine = ScriptedEngine(tokenizer, reply)
        base = stack.enter_context(serve_app_in_thread(create_app(engine, "tiny", api_key="k")))
        return base, engine

    with stack:
        yield start


def _client(base):
    from openai import OpenAI

    return OpenAI(base_url=f"{base}/v1", api_key="k", max_retries=0)


def _tool_loop(client, stream: bool) -> tuple[list, str]:
    """The client's side of a tool loop: send tools, run the calls it gets, send the results, read the answer."""
    messages: list = list(QUESTION)
    calls_made = []
    for _ in range(3):
        if stream:
            message, finish = _collect_stream(client.chat.completions.create(
                model="tiny", messages=messages, tools=TOOLS, stream=True))
            messages.append(message)
        else:
            choice = client.chat.completions.create(model="tiny", messages=messages, tools=TOOLS).choices[0]
            message, finish = choice.message.model_dump(exclude_none=True), choice.finish_reason
            messages.append(choice.message)  # the SDK's own message object, sent back as clients do
        if finish != "tool_calls":
            return calls_made, message["content"]
        for call in message["tool_calls"]:
            args = json.loads(call["function"]["arguments"])
            calls_made.append((call["function"]["name"], args))
            messages.append({"role": "tool", "tool_call_id": call["id"], "content": get_weather(**args)})
    raise AssertionError("no final answer after 3 rounds")


def _collect_stream(stream) -> tuple[dict, str]:
    """Accumulate OpenAI chunks into one assistant message, as client code does."""
    content, calls, finish = "", {}, None
    for chunk in stream:
        for ch in chunk.choices:
            content += ch.delta.content or ""
            for d in ch.delta.tool_calls or []:
                call = calls.setdefault(d.index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}})
                call["id"] += d.id or ""
                call["function"]["name"] += (d.function.name or "") if d.function else ""
                call["function"]["arguments"] += (d.function.arguments or "") if d.function else ""
            finish = ch.finish_reason or finish
    message = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = [calls[i] for i in sorted(calls)]
    return message, finish


@pytest.mark.parametrize("stream", [False, True])
def test_a_tool_loop_with_the_official_openai_client(serve, stream):
    base, engine = serve()
    calls, answer = _tool_loop(_client(base), stream)
    assert calls == [("get_weather", {"city": "Paris"})]
    assert answer == f"The tool says: {get_weather('Paris')}"
    first, second = engine.prompts
    assert '"name": "get_weather"' in first and first.endswith("<|im_start|>assistant\n")  # tools declared
    # the second prompt renders the call the client sent back and the tool result, in the training format
    assert ('<|im_start|>assistant\nLet me check.\n<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}'
            f"</tool_call><|im_end|>\n<|im_start|>tool\n{get_weather('Paris')}<|im_end|>") in second


def test_the_first_reply_carries_tool_calls_and_finish_reason(serve):
    base, _ = serve()
    choice = _client(base).chat.completions.create(model="tiny", messages=QUESTION, tools=TOOLS).choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content == "Let me check."
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}


def test_streamed_tool_calls_join_to_the_plain_answer(serve):
    base, _ = serve()
    client = _client(base)
    plain = client.chat.completions.create(model="tiny", messages=QUESTION, tools=TOOLS).choices[0]
    with httpx.Client(base_url=base, headers={"Authorization": "Bearer k"}) as c:
        body = {"model": "tiny", "messages": QUESTION, "tools": TOOLS, "stream": True}
        lines = [ln[6:] for ln in c.post("/v1/chat/completions", json=body).text.splitlines() if ln.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(x) for x in lines[:-1]]
    deltas = [ch["choices"][0]["delta"] for ch in chunks]
    [call_delta] = [d["tool_calls"] for d in deltas if "tool_calls" in d]
    assert call_delta[0]["index"] == 0 and call_delta[0]["type"] == "function"
    assert call_delta[0]["function"] == plain.message.tool_calls[0].function.model_dump()
    assert "".join(d.get("content") or "" for d in deltas) == plain.message.content
    assert "<tool_call>" not in "".join(d.get("content") or "" for d in deltas)
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize("choice, prefix", [
    ({"type": "function", "function": {"name": "get_weather"}}, '<tool_call>{"name": "get_weather", "arguments":'),
    ("required", "<tool_call>"),
])
def test_required_and_named_tool_choice_force_the_call_opening(serve, choice, prefix):
    base, engine = serve()
    reply = _client(base).chat.completions.create(model="tiny", messages=QUESTION, tools=TOOLS,
                                                  tool_choice=choice).choices[0]
    assert engine.prompts[0].endswith(f"<|im_start|>assistant\n{prefix}")
    assert reply.finish_reason == "tool_calls" and reply.message.tool_calls[0].function.name == "get_weather"
    assert not reply.message.content


def test_tool_choice_none_parses_nothing(serve):
    base, engine = serve()
    reply = _client(base).chat.completions.create(model="tiny", messages=QUESTION, tools=TOOLS,
                                                  tool_choice="none").choices[0]
    assert reply.finish_reason == "stop" and reply.message.content == CALL_TEXT and not reply.message.tool_calls
    assert '"name": "get_weather"' in engine.prompts[0]  # the tools are still declared


@pytest.mark.parametrize("stream", [False, True])
def test_a_malformed_call_comes_back_as_text(serve, stream):
    bad = '<tool_call>{"name": "get_weather", "arguments": {"city": </tool_call>'
    base, _ = serve(bad)
    client = _client(base)
    if stream:
        message, finish = _collect_stream(client.chat.completions.create(model="tiny", messages=QUESTION,
                                                                         tools=TOOLS, stream=True))
    else:
        choice = client.chat.completions.create(model="tiny", messages=QUESTION, tools=TOOLS).choices[0]
        message, finish = choice.message.model_dump(exclude_none=True), choice.finish_reason
    assert finish == "stop" and message["content"] == bad and "tool_calls" not in message


CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}


@pytest.mark.parametrize("extra, param, words", [
    ({"tool_choice": "auto"}, "tool_choice", "tool_choice needs tools"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice",
     "undeclared function 'nope'"),
    ({"tools": TOOLS, "parallel_tool_calls": False}, "parallel_tool_calls", "not supported"),
    ({"tools": TOOLS, "messages": QUESTION + [{"role": "tool", "tool_call_id": "x", "content": "r"}]}, "messages",
     "'x' matches no earlier tool call"),
    ({"tools": TOOLS, "messages": QUESTION + [{"role": "assistant", "content": None, "tool_calls": [
        {**CALL, "function": {"name": "rm", "arguments": "{}"}}]}, {"role": "tool", "tool_call_id": "call_1",
                                                                  "content": "r"}]}, "messages", "undeclared function 'rm'"),
    ({"tools": TOOLS, "messages": QUESTION + [{"role": "assistant", "content": None, "tool_calls": [
        {**CALL, "function": {"name": "get_weather", "arguments": "{oops"}}]}]}, "messages.1.tool_calls.0.function.arguments",
     "not valid JSON"),
    ({"tools": [{"type": "function"}]}, "tools.0.function", "Field required"),
    ({"functions": [{"name": "f"}]}, "functions", "not supported"),
])
def test_tool_requests_it_cannot_honour_are_400(serve, extra, param, words):
    base, _ = serve()
    with httpx.Client(base_url=base, headers={"Authorization": "Bearer k"}) as c:
        r = c.post("/v1/chat/completions", json={"model": "tiny", "messages": QUESTION, **extra})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and words in err["message"] and err["type"] == "invalid_request_error"


def test_a_model_whose_template_writes_another_call_format_is_refused(serve, tokenizer):
    """A template that renders tools itself but not as <tool_call> blocks: its calls could not be read back."""
    import copy

    from tests.live_server import serve_app_in_thread

    from alignkit.generate.server import create_app

    native = copy.deepcopy(tokenizer)
    native.chat_template = ("{% for m in messages %}{{ m.content }}{% endfor %}{% if tools %}[TOOLS]{% endif %}"
                            "{% if add_generation_prompt %}>{% endif %}")
    with serve_app_in_thread(create_app(ScriptedEngine(native), "tiny")) as base:
        r = httpx.post(f"{base}/v1/chat/completions", json={"model": "tiny", "messages": QUESTION, "tools": TOOLS})
        plain = httpx.post(f"{base}/v1/chat/completions", json={"model": "tiny", "messages": QUESTION})
    assert r.status_code == 400 and r.json()["error"]["param"] == "tools" and "own format" in r.text
    assert plain.status_code == 200


def test_the_real_engine_takes_tool_prompts(tiny_lm):
    """The HF engine renders a tool conversation (and a forced call opening) like any prompt; its prompt
    tokens are those of the shared renderer."""
    from tests.live_server import serve_app_in_thread

    from alignkit.data.toolcalls import Conversation
    from alignkit.generate.engine import HFEngine
    from alignkit.generate.server import create_app

    model, tok = tiny_lm
    history = QUESTION + [{"role": "assistant", "content": None, "tool_calls": [CALL]},
                          {"role": "tool", "tool_call_id": "call_1", "content": "21"}]
    usage = []
    with serve_app_in_thread(create_app(HFEngine(model, tok), "tiny")) as base:
        for choice in ("auto", "required", {"type": "function", "function": {"name": "get_weather"}}):
            r = httpx.post(f"{base}/v1/chat/completions", json={
                "model": "tiny", "messages": history, "tools": TOOLS, "tool_choice": choice, "max_tokens": 4,
                "temperature": 0}, timeout=60)
            assert r.status_code == 200, r.text
            assert r.json()["choices"][0]["finish_reason"] == "length"  # 4 tokens cannot close a call
            usage.append(r.json()["usage"]["prompt_tokens"])
    canonical = [{**m, "content": m["content"] or ""} for m in history]
    assert usage[0] == len(encode_prompt(tok, Conversation(canonical, TOOLS), True)[1])
    assert usage[0] < usage[1] < usage[2]  # plus the forced openings "<tool_call>" and '<tool_call>{"name": ...
