"""Row validation: every bad input names file, line and field, with the exact text the user sees."""

import json

import pytest

from alignkit.data.rows import read_rows
from alignkit.errors import DataError


def _write(tmp_path, lines, name="d.jsonl"):
    p = tmp_path / name
    p.write_bytes(b"".join((ln if isinstance(ln, bytes) else ln.encode()) + b"\n" for ln in lines))
    return p


def test_explicit_and_implicit_prompt(tmp_path):
    conv = {"chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "good"}],
            "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "bad"}]}
    p = _write(tmp_path, [json.dumps(conv)])
    (ex,) = read_rows(p, "preference")
    assert ex.prompt == [{"role": "user", "content": "q"}]
    assert ex.completions == [[{"role": "assistant", "content": "good"}], [{"role": "assistant", "content": "bad"}]]
    assert ex.conversational
    p2 = _write(tmp_path, [json.dumps({"prompt": "2+2=", "chosen": "4", "rejected": "5"})], "e.jsonl")
    (ex2,) = read_rows(p2, "preference")
    assert ex2.prompt == "2+2=" and not ex2.conversational


def test_malformed_json_line(tmp_path):
    p = _write(tmp_path, ['{"prompt": "a", "chosen": "b", "rejected": "c"}', '{"prompt": "a" "chosen": 1}'])
    with pytest.raises(DataError) as exc:
        read_rows(p, "preference")
    assert str(exc.value) == f"{p}:2: invalid JSON: Expecting ',' delimiter (column 16)"


def test_missing_field(tmp_path):
    p = _write(tmp_path, ['{"prompt": "a", "chosen": "b"}'])
    with pytest.raises(DataError) as exc:
        read_rows(p, "preference")
    assert str(exc.value) == f"{p}:1: field 'rejected': missing"


def test_wrong_type(tmp_path):
    p = _write(tmp_path, ['{"prompt": "a", "chosen": "b", "rejected": 3}'])
    with pytest.raises(DataError) as exc:
        read_rows(p, "preference")
    assert str(exc.value) == f"{p}:1: field 'rejected': expected a string or a list of messages, got int"


def test_bad_message(tmp_path):
    row = {"prompt": [{"role": "user"}], "chosen": [{"role": "assistant", "content": "x"}],
           "rejected": [{"role": "assistant", "content": "y"}]}
    p = _write(tmp_path, [json.dumps(row)])
    with pytest.raises(DataError) as exc:
        read_rows(p, "preference")
    assert str(exc.value) == f"{p}:1: field 'prompt[0].content': missing"


def test_non_utf8(tmp_path):
    p = _write(tmp_path, ['{"prompt": "a", "chosen": "b", "rejected": "c"}', b'{"prompt": "\xff"}'])
    with pytest.raises(DataError) as exc:
        read_rows(p, "preference")
    assert str(exc.value) == f"{p}:2: not valid UTF-8 (byte 0xff at column 13)"


def test_kway_rewards_validated(tmp_path):
    p = _write(tmp_path, ['{"prompt": "a", "completions": ["x", "y", "z"], "rewards": [1, 0]}'])
    with pytest.raises(DataError) as exc:
        read_rows(p, "kway")
    assert str(exc.value) == f"{p}:1: field 'rewards': expected a list of 3 numbers (one per completion)"
    p = _write(tmp_path, ['{"prompt": "a", "completions": ["x", "y"], "rewards": [1, NaN]}'], "n.jsonl")
    with pytest.raises(DataError, match=r"n\.jsonl:1: field 'rewards\[1\]': expected a finite number, got nan"):
        read_rows(p, "kway")


def test_mixed_styles_refused(tmp_path):
    p = _write(tmp_path, [json.dumps({"prompt": "a", "chosen": [{"role": "assistant", "content": "x"}],
                                      "rejected": "y"})])
    with pytest.raises(DataError, match="mixes plain strings and message lists"):
        read_rows(p, "preference")


def test_sft_messages_and_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    pq.write_table(pa.Table.from_pylist([{"messages": msgs}]), tmp_path / "s.parquet")
    (ex,) = read_rows(tmp_path / "s.parquet", "sft")
    assert ex.prompt == msgs[:1] and ex.completions == [msgs[1:]]


def test_saved_hf_dataset(tmp_path):
    from datasets import Dataset

    Dataset.from_list([{"prompt": "p", "completion": "c"}]).save_to_disk(str(tmp_path / "ds"))
    (ex,) = read_rows(tmp_path / "ds", "sft")
    assert ex.prompt == "p" and ex.completions == ["c"]


def test_unknown_format(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("a,b\n")
    with pytest.raises(DataError, match=r"unsupported data format '\.csv'"):
        read_rows(p, "sft")
