"""One chat-message validator: the row reader, the chat server and the reward server agree on every message."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from alignkit.errors import DataError

MESSAGES = [
    ({"role": "system", "content": "Be brief."}, None),
    ({"role": "user", "content": "hi"}, None),
    ({"role": "assistant", "content": "hello"}, None),
    ({"role": "tool", "content": "42"}, None),
    ({"role": "user", "content": "hi", "name": "ann"}, None),  # extra OpenAI keys are ignored
    ({"role": "wizard", "content": "x"}, "role': unknown role 'wizard' (expected one of system, user, assistant, tool)"),
    ({"role": "developer", "content": "x"}, "role': unknown role 'developer'"),
    ({"role": "User", "content": "x"}, "role': unknown role 'User'"),
    ({"content": "x"}, "role': missing"),
    ({"role": "user"}, "content': missing"),
    ({"role": "user", "content": 5}, "content': expected a string, got int"),
    ({"role": 1, "content": "x"}, "role': expected a string, got int"),
]


def _data(msg) -> str | None:
    from alignkit.data.records import check_messages

    try:
        check_messages([msg], "f.jsonl:3", "messages")
    except DataError as exc:
        return str(exc)
    return None


def _chat_server(msg) -> bool:
    from alignkit.generate.server import ChatRequest

    try:
        ChatRequest.model_validate_json(json.dumps({"model": "m", "messages": [msg]}))
    except ValidationError:
        return False
    return True


def _reward_server(msg) -> bool:
    from alignkit.generate.reward_server import ScoreRequest

    try:
        ScoreRequest.model_validate_json(json.dumps({"rows": [{"prompt": [msg], "completion": "a"}]}))
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize("msg, problem", MESSAGES)
def test_the_three_call_sites_agree(msg, problem):
    """Data files, ``alignkit serve`` and the reward endpoint accept and refuse the same messages (before,
    the reward endpoint took any role and the data reader and chat server had their own copies)."""
    data_error = _data(msg)
    if problem is None:
        assert data_error is None
    else:
        assert data_error is not None and data_error.startswith("f.jsonl:3: field 'messages[0]."), data_error
        assert problem in data_error
    assert _chat_server(msg) is (problem is None)
    assert _reward_server(msg) is (problem is None)


def test_canonical_form_keeps_role_and_content_only():
    from alignkit.data.records import ROLES, check_messages

    assert ROLES == ("system", "user", "assistant", "tool")
    assert check_messages([{"role": "user", "content": "hi", "name": "x"}], "w", "m") == [{"role": "user", "content": "hi"}]


def test_a_bad_message_in_a_training_file_names_file_line_and_field(tmp_path):
    from alignkit.data.rows import read_rows

    path = tmp_path / "sft.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})
                    + "\n" + json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "bot", "content": "a"}]})
                    + "\n")
    with pytest.raises(DataError, match=r"sft.jsonl:2: field 'messages\[1\]\.role': unknown role 'bot'"):
        read_rows(path, "sft")
