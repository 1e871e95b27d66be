"""Tool-use conversations: validation, the one renderer, the default format's parser, and the SFT loss mask."""

from __future__ import annotations

import json

import pytest

from alignkit.data.records import check_messages
from alignkit.data.rows import read_rows
from alignkit.data.tokenize import ChatTokenizer, DataPolicy, conversation_parity_report, tokenize_examples
from alignkit.data.toolcalls import (
    Conversation,
    ToolCallParser,
    format_tool_call,
    parse_tool_calls,
    render_chat,
    template_supports_tools,
)
from alignkit.errors import DataError

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
RESULT = "TOOLRESULT 21 degrees, clear"
CONVERSATION = [
    {"role": "user", "content": "What's the weather in Paris?"},
    {"role": "assistant", "content": "Let me look.", "tool_calls": [CALL]},
    {"role": "tool", "content": RESULT, "tool_call_id": "call_1"},
    {"role": "assistant", "content": "It is 21 degrees and clear."},
]


def _write(tmp_path, *rows) -> str:
    path = tmp_path / "tools.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _with(conversation: list[dict], index: int, **changes) -> list[dict]:
    out = [dict(m) for m in conversation]
    out[index] = {k: v for k, v in {**out[index], **changes}.items() if v is not None}
    return out


def _call(**function) -> dict:
    return {**CALL, "function": {**CALL["function"], **function}}


BAD_ROWS = [
    ({"messages": _with(CONVERSATION, 1, tool_calls=[_call(name="get_time")]), "tools": TOOLS},
     "field 'messages[1].tool_calls[0].function.name': undeclared function 'get_time' (declared: get_weather)"),
    ({"messages": _with(CONVERSATION, 1, tool_calls=[_call(arguments="{city: Paris}")]), "tools": TOOLS},
     "field 'messages[1].tool_calls[0].function.arguments': not valid JSON"),
    ({"messages": _with(CONVERSATION, 1, tool_calls=[_call(arguments='["Paris"]')]), "tools": TOOLS},
     "field 'messages[1].tool_calls[0].function.arguments': must be a JSON object, got list"),
    ({"messages": _with(CONVERSATION, 1, tool_calls=[_call(arguments={"city": "Paris"})]), "tools": TOOLS},
     "field 'messages[1].tool_calls[0].function.arguments': expected a string, got dict"),
    ({"messages": _with(CONVERSATION, 2, tool_call_id="call_9"), "tools": TOOLS},
     "field 'messages[2].tool_call_id': 'call_9' matches no earlier tool call"),
    ({"messages": _with(CONVERSATION, 2, tool_call_id=None), "tools": TOOLS}, "field 'messages[2].tool_call_id': missing"),
    ({"messages": _with(CONVERSATION, 1, tool_calls=[CALL, CALL]), "tools": TOOLS},
     "field 'messages[1].tool_calls[1].id': call id 'call_1' is used twice"),
    ({"messages": _with(CONVERSATION, 0, tool_calls=[CALL]), "tools": TOOLS},
     "field 'messages[0].tool_calls': only assistant messages carry tool_calls"),
    ({"messages": _with(CONVERSATION, 1, content=None, tool_calls=None), "tools": TOOLS},
     "field 'messages[1].content': missing"),
    ({"messages": CONVERSATION}, "undeclared function 'get_weather' (declared: none: the row has no 'tools')"),
    ({"messages": CONVERSATION, "tools": [{"type": "function", "function": {"name": "get weather"}}]},
     "field 'tools[0].function.name': String should match pattern"),
    ({"messages": CONVERSATION, "tools": TOOLS + TOOLS}, "field 'tools[1].function.name': function 'get_weather' is declared twice"),
    ({"prompt": "q", "completion": "a", "tools": TOOLS}, "field 'tools': needs message lists"),
]


@pytest.mark.parametrize("row, problem", BAD_ROWS)
def test_bad_tool_rows_name_file_line_and_field(tmp_path, row, problem):
    path = _write(tmp_path, {"messages": CONVERSATION, "tools": TOOLS}, row)
    with pytest.raises(DataError) as err:
        read_rows(path, "sft")
    assert str(err.value).startswith(f"{path}:2: "), err.value
    assert problem in str(err.value)


def test_prompt_completion_rows_name_their_own_fields(tmp_path):
    row = {"prompt": CONVERSATION[:1], "completion": _with(CONVERSATION, 2, tool_call_id="nope")[1:], "tools": TOOLS}
    with pytest.raises(DataError, match=r"tools.jsonl:1: field 'completion\[1\]\.tool_call_id': 'nope' matches no"):
        read_rows(_write(tmp_path, row), "sft")


def test_a_valid_tool_row_keeps_its_calls_and_tools(tmp_path):
    [ex] = read_rows(_write(tmp_path, {"messages": CONVERSATION, "tools": TOOLS, "id": 7}), "sft")
    assert ex.tools == TOOLS and ex.meta == {"id": 7}
    assert ex.prompt == CONVERSATION[:1] and ex.completions == [CONVERSATION[1:]]  # every assistant turn trainable


def test_the_chat_server_takes_the_same_tool_messages():
    """One validator: what a data file refuses in one message, ``alignkit serve`` refuses too."""
    from pydantic import ValidationError

    from alignkit.generate.server import ChatRequest

    for row, _problem in BAD_ROWS[1:4] + BAD_ROWS[7:9]:
        msgs = row["messages"]
        with pytest.raises(DataError):
            check_messages(msgs, "f", "messages")
        with pytest.raises(ValidationError):
            ChatRequest.model_validate({"model": "m", "messages": msgs})
    ChatRequest.model_validate({"model": "m", "messages": CONVERSATION, "tools": TOOLS})


# --- rendering ------------------------------------------------------------------------------------------


def test_default_format_for_templates_without_tools(tokenizer):
    assert not template_supports_tools(tokenizer)
    text = render_chat(tokenizer, CONVERSATION, TOOLS)
    system = text.split("<|im_end|>")[0]
    assert system.startswith("<|im_start|>system\n# Tools") and json.dumps(TOOLS[0]) in system
    assert ('<|im_start|>assistant\nLet me look.\n<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}'
            '</tool_call><|im_end|>') in text
    assert f"<|im_start|>tool\n{RESULT}<|im_end|>" in text
    # an existing system turn keeps its text, the declarations follow it
    with_system = render_chat(tokenizer, [{"role": "system", "content": "Be brief."}, *CONVERSATION], TOOLS)
    assert with_system.startswith("<|im_start|>system\nBe brief.\n\n# Tools")
    # without tools nothing changes
    plain = [{"role": "user", "content": "hi"}]
    assert render_chat(tokenizer, plain, add_generation_prompt=True) == tokenizer.apply_chat_template(
        plain, tokenize=False, add_generation_prompt=True)


def test_smollm2_template_gets_the_default_format():
    from alignkit.models import load_tokenizer

    tok = load_tokenizer("smollm2-135m-instruct")
    assert not template_supports_tools(tok)
    assert "<tool_call>" in render_chat(tok, CONVERSATION, TOOLS)


NATIVE = ("{% if tools %}TOOLS:{% for t in tools %}{{ t.function.name }};{% endfor %}\n{% endif %}"
          "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}"
          "{% for c in m.tool_calls or [] %}[call {{ c.function.name }} {{ c.function.arguments.city }}]{% endfor %}"
          "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def test_a_template_that_takes_tools_renders_them_itself(tokenizer):
    import copy

    native = copy.deepcopy(tokenizer)  # the fixture is session-wide: work on a copy
    native.chat_template = NATIVE
    assert template_supports_tools(native)
    text = render_chat(native, CONVERSATION, TOOLS)
    assert text.startswith("TOOLS:get_weather;<|im_start|>user") and "[call get_weather Paris]" in text  # arguments as an object
    assert "<tool_call>" not in text
    # the word "tools" in the template's literal text is not support
    native.chat_template = "tools: {% for m in messages %}{{ m.content }}{% endfor %}"
    assert not template_supports_tools(native)


def test_the_engine_renders_what_training_renders(tokenizer):
    """Inference (the engine's prompt) and training (ChatTokenizer) go through the same renderer."""
    from alignkit.generate.engine import encode_prompt

    ct = ChatTokenizer(tokenizer)
    _text, ids = encode_prompt(tokenizer, Conversation(CONVERSATION[:3], TOOLS), True)
    [ex], _ = tokenize_examples(read_rows_from(CONVERSATION, TOOLS), tokenizer, DataPolicy())
    assert ids == ex.prompt_ids + ex.completion_ids[0][: len(ids) - len(ex.prompt_ids)]
    assert ct.prompt_ids(CONVERSATION[:3], True, TOOLS) == ids


def read_rows_from(messages, tools):
    from alignkit.data.rows import parse_row

    return [parse_row({"messages": messages, **({"tools": tools} if tools else {})}, "sft", "t:1", 0)]


# --- parsing --------------------------------------------------------------------------------------------

REPLIES = [
    'Let me look.\n<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>',
    '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>\n'
    '<tool_call>{"name": "get_weather", "arguments": {"city": "Rome"}}</tool_call>',
    "It is sunny. < not a call <tool",
    '<tool_call>{"name": "get_weather", "arguments": {"city": </tool_call> trailing',
    '<tool_call>{"name": "get_time", "arguments": {}}</tool_call>',
    '<tool_call>{"name": "get_weather", "arguments": "Paris"}</tool_call>',
    'ok <tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}',
    "",
]


def test_parse_is_the_inverse_of_the_default_format():
    message = CONVERSATION[1]
    text = f"{message['content']}\n{format_tool_call(CALL)}"
    parsed = parse_tool_calls(text, TOOLS)
    assert parsed.error is None and parsed.content == "Let me look."
    assert [(c["type"], c["function"]) for c in parsed.tool_calls] == [("function", CALL["function"])]
    two = parse_tool_calls(REPLIES[1], TOOLS)
    assert [json.loads(c["function"]["arguments"])["city"] for c in two.tool_calls] == ["Paris", "Rome"]
    assert two.content == "" and len({c["id"] for c in two.tool_calls}) == 2


@pytest.mark.parametrize("text, error", [
    (REPLIES[3], "tool call is not valid JSON"),
    (REPLIES[4], "undeclared function 'get_time'"),
    (REPLIES[5], '"arguments" must be a JSON object'),
    (REPLIES[6], "a <tool_call> is not closed"),
])
def test_a_malformed_call_is_an_error_value_and_stays_text(text, error):
    parsed = parse_tool_calls(text, TOOLS)
    assert parsed.tool_calls == [] and error in parsed.error
    assert parsed.content.replace(" ", "") == text.replace(" ", "")  # the call is kept as written


@pytest.mark.parametrize("text", REPLIES)
def test_streamed_parsing_gives_the_same_result_in_any_pieces(text):
    whole = parse_tool_calls(text, TOOLS)
    for size in (1, 2, 5, 13):
        parser = ToolCallParser(TOOLS)
        events = []
        for k in range(0, len(text), size):
            events += parser.feed(text[k:k + size])
        events += parser.finish()
        assert parser.result == whole
        assert "".join(v for kind, v in events if kind == "content") == whole.content
        assert [v for kind, v in events if kind == "call"] == whole.tool_calls


# --- loss mask ------------------------------------------------------------------------------------------


def _trained_text(tokenizer, train_on="all_assistant"):
    [ex], _ = tokenize_examples(read_rows_from(CONVERSATION, TOOLS), tokenizer, DataPolicy(max_length=4096),
                                train_on=train_on)
    ids, mask = ex.completion_ids[0], ex.completion_masks[0]
    trained = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m])
    context = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if not m])
    return ex, trained, context


def test_loss_mask_covers_the_assistant_turns_and_never_the_tool_result(tokenizer):
    ex, trained, context = _trained_text(tokenizer)
    call = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
    assert trained == f"Let me look.\n{call}<|im_end|>It is 21 degrees and clear.<|im_end|>"
    assert context == f"\n<|im_start|>tool\n{RESULT}<|im_end|>\n<|im_start|>assistant\n"
    assert RESULT not in trained


@pytest.mark.parametrize("pack", [False, True])
def test_batches_carry_the_mask(tokenizer, pack):
    """Both batch layouts put exactly the trained tokens in ``loss_mask``."""
    from alignkit.data.batching import collate, collate_segments

    ex, trained, _ = _trained_text(tokenizer)
    batch = (collate_segments([ex], 0, shared_prompt=False, pack=True, n_comp=1) if pack else collate([ex], 0, n_comp=1))
    assert tokenizer.decode(batch["input_ids"][batch["loss_mask"]].tolist()) == trained


def test_train_on_last_assistant_trains_only_the_final_turn(tokenizer):
    _ex, trained, context = _trained_text(tokenizer, "last_assistant")
    assert trained == "It is 21 degrees and clear.<|im_end|>"
    assert "<tool_call>" in context and RESULT in context


def test_every_assistant_turn_is_trained_by_default():
    from alignkit.train.run import DataConfig

    assert DataConfig(train="x.jsonl").train_on == "all_assistant"
    with pytest.raises(ValueError):
        DataConfig(train="x.jsonl", train_on="first_assistant")


def test_single_turn_rows_keep_no_mask(tokenizer):
    rows = read_rows_from(CONVERSATION[:1] + [{"role": "assistant", "content": "hi"}], None)
    [ex], _ = tokenize_examples(rows, tokenizer, DataPolicy())
    assert ex.completion_masks is None


# --- check-template ---------------------------------------------------------------------------------------


def test_conversation_parity_holds_and_catches_a_forked_renderer(tokenizer):
    from alignkit.generate.engine import encode_prompt

    def engine(msgs, tools):
        return encode_prompt(tokenizer, Conversation(msgs, tools), True)[1]

    assert conversation_parity_report(tokenizer, [(CONVERSATION, TOOLS)], engine) == []

    def forked(msgs, tools):  # an inference path that renders the tools in another place
        msgs = [{"role": "system", "content": json.dumps(tools)}] + [
            {"role": m["role"], "content": m["content"]} for m in msgs]
        return tokenizer(tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True),
                         add_special_tokens=False)["input_ids"]

    failures = conversation_parity_report(tokenizer, [(CONVERSATION, TOOLS)], forked)
    assert len(failures) == 2 and all("differ from the inference render" in f for f in failures)


def test_check_template_proves_tool_rows(tmp_path, capsys):
    from alignkit.train.cli import CheckTemplateConfig, check_template

    path = _write(tmp_path, {"messages": CONVERSATION, "tools": TOOLS})
    assert check_template(CheckTemplateConfig(data=path, kind="sft")) == 0
    out = capsys.readouterr().out
    assert "1/1 tool/multi-turn conversations" in out and "FAIL" not in out


def test_plain_multi_turn_chat_trains_every_assistant_turn_and_no_user_turn(tokenizer):
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "USERTURN joke?"}, {"role": "assistant", "content": "No."}]
    [ex], _ = tokenize_examples(read_rows_from(chat, None), tokenizer, DataPolicy())
    ids, mask = ex.completion_ids[0], ex.completion_masks[0]
    assert tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m]) == "Hello.<|im_end|>No.<|im_end|>"
    assert "USERTURN" in tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if not m])


def test_conversation_parity_with_a_template_that_renders_tools_itself(tokenizer):
    import copy

    from alignkit.generate.engine import encode_prompt

    native = copy.deepcopy(tokenizer)
    native.chat_template = NATIVE
    report = conversation_parity_report(
        native, [(CONVERSATION, TOOLS)], lambda m, t: encode_prompt(native, Conversation(m, t), True)[1])
    assert report == []
