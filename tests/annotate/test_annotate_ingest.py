"""Import: pair formation, preserved prompt forms, duplicates, degenerate pairs, malformed files."""

import json

import pytest
from annotate_helpers import write_jsonl
from sqlalchemy import func, select

from alignkit.annotate import db as schema
from alignkit.annotate.db import create_database
from alignkit.annotate.ingest import import_file
from alignkit.errors import DataError

MSGS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]


@pytest.fixture()
def db(tmp_path):
    d = create_database(tmp_path / "a.sqlite", {"redundancy": 3, "criteria": ["helpfulness"], "scale": 5})
    yield d
    d.close()


def items(db):
    with db.read() as conn:
        return conn.execute(select(schema.items).order_by(schema.items.c.id)).all()


def test_all_and_adjacent_pairs(db, tmp_path):
    f = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "q", "responses": ["a", "b", "c", "d"]}])
    r = import_file(db, f, pairs="adjacent")
    assert r.added == 3
    got = [(json.loads(i.response_1), json.loads(i.response_2)) for i in items(db)]
    assert got == [("a", "b"), ("b", "c"), ("c", "d")]
    r = import_file(db, f, pairs="all")  # 6 pairs, 3 of them already present
    assert (r.added, r.duplicates) == (3, 3)
    assert {(json.loads(i.response_1), json.loads(i.response_2)) for i in items(db)} == {
        ("a", "b"), ("b", "c"), ("c", "d"), ("a", "c"), ("a", "d"), ("b", "d")}


def test_messages_and_chosen_rejected_preserved(db, tmp_path):
    rows = [
        {"prompt": MSGS, "chosen": [{"role": "assistant", "content": "Hello."}],
         "rejected": [{"role": "assistant", "content": "Go away."}], "id": "x1"},
        {"prompt": "plain", "responses": ["one", "two"]},
    ]
    r = import_file(db, write_jsonl(tmp_path / "p.jsonl", rows), redundancy=2)
    assert (r.rows, r.added, r.redundancy) == (2, 2, 2)
    first, second = items(db)
    assert json.loads(first.prompt) == MSGS
    assert json.loads(first.response_1) == [{"role": "assistant", "content": "Hello."}]
    assert json.loads(first.extra) == {"id": "x1", "imported_preference": "response_1"}
    assert first.source.endswith("p.jsonl:1") and second.source.endswith("p.jsonl:2")
    assert first.redundancy == 2
    assert json.loads(second.prompt) == "plain"


def test_completions_alias_and_string_responses_under_a_chat_prompt(db, tmp_path):
    rows = [{"prompt": MSGS, "completions": ["first", "second"], "rewards": [0.1, 0.2]}]
    import_file(db, write_jsonl(tmp_path / "p.jsonl", rows))
    (item,) = items(db)
    assert json.loads(item.prompt) == MSGS
    assert json.loads(item.response_1) == [{"role": "assistant", "content": "first"}]
    assert json.loads(item.extra) == {"rewards": [0.1, 0.2]}


def test_swapped_pair_is_a_duplicate(db, tmp_path):
    import_file(db, write_jsonl(tmp_path / "a.jsonl", [{"prompt": "q", "responses": ["x", "y"]}]))
    r = import_file(db, write_jsonl(tmp_path / "b.jsonl", [{"prompt": "q", "chosen": "y", "rejected": "x"}]))
    assert (r.added, r.duplicates) == (0, 1)


def test_degenerate_pairs_skip_or_error(db, tmp_path):
    f = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "q", "responses": ["same", "same", "  ", "other"]}])
    r = import_file(db, f)
    # pairs: (same,same) identical; (same,"  ")x2 and ("  ",other) empty; (same,other)x2 kept
    assert r.degenerate == {"identical": 1, "empty": 3}
    assert r.added == 1  # the two (same, other) pairs are one pair
    assert r.duplicates == 1
    with pytest.raises(DataError, match=r"p.jsonl:1: .*identical.*degenerate"):
        import_file(db, f, degenerate="error")


BAD_ROWS = [
    ("not json {", "invalid JSON"),
    ('["a list"]', "expected a JSON object"),
    ('{"responses": ["a", "b"]}', "field 'prompt': missing"),
    ('{"prompt": 5, "responses": ["a", "b"]}', "field 'prompt': expected a string or a list of messages"),
    ('{"prompt": "", "responses": ["a", "b"]}', "field 'prompt': empty"),
    ('{"prompt": "q", "responses": ["a"]}', "field 'responses': expected a list of at least 2"),
    ('{"prompt": "q", "responses": ["a", 3]}', r"field 'responses\[1\]': expected a string"),
    ('{"prompt": "q"}', "field 'responses': missing"),
    ('{"prompt": "q", "chosen": "a"}', "field 'rejected': missing"),
    ('{"prompt": "q", "responses": ["a", "b"], "chosen": "a", "rejected": "b"}', "not both"),
    ('{"prompt": [{"role": "user"}], "responses": ["a", "b"]}', r"field 'prompt\[0\].content': missing"),
    ('{"prompt": [{"role": "robot", "content": "x"}], "responses": ["a", "b"]}', "unknown role"),
    ('{"prompt": "q", "responses": ["a", [{"role": "assistant", "content": "b"}]]}',
     r"field 'responses\[1\]': a message list needs a message-list prompt"),
    ('{"prompt": "q", "responses": ["a", "b"], "completions": ["a", "b"]}', "not both"),
    ('{"prompt": "q", "completions": "ab"}', "field 'completions': expected a list"),
]


@pytest.mark.parametrize("bad,message", BAD_ROWS)
def test_malformed_row_names_line_and_field_and_imports_nothing(db, tmp_path, bad, message):
    good = json.dumps({"prompt": "fine", "responses": ["ok 1", "ok 2"]})
    f = tmp_path / "bad.jsonl"
    f.write_text(f"{good}\n\n{good.replace('fine', 'fine too')}\n{bad}\n{good}\n", encoding="utf-8")
    with pytest.raises(DataError, match=message) as err:
        import_file(db, f)
    assert "bad.jsonl:4:" in str(err.value)  # the blank line still counts
    with db.read() as conn:
        assert conn.execute(select(func.count()).select_from(schema.items)).scalar_one() == 0


def test_bad_encoding_empty_and_missing_file(db, tmp_path):
    f = tmp_path / "latin.jsonl"
    f.write_bytes(b'{"prompt": "caf\xe9", "responses": ["a", "b"]}\n')
    with pytest.raises(DataError, match="latin.jsonl:1: not valid UTF-8"):
        import_file(db, f)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(DataError, match="no rows"):
        import_file(db, empty)
    with pytest.raises(DataError, match="not found"):
        import_file(db, tmp_path / "nope.jsonl")
