"""Unpaired and stepwise rows: accepted forms and refusals naming file:line:field."""

from __future__ import annotations

import json

import pytest

from alignkit.data.rows import read_rows
from alignkit.errors import DataError


def _write(tmp_path, rows):
    p = tmp_path / "rows.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def test_stepwise_and_unpaired_rows(tmp_path):
    rows = read_rows(_write(tmp_path, [{"prompt": "2+2?", "completions": ["2 + 2 = 4", "So 4."], "labels": [True, 0.5]}]),
                     "stepwise")
    assert rows[0].completions == ["2 + 2 = 4", "So 4."] and rows[0].labels == [1.0, 0.5]
    rows = read_rows(_write(tmp_path, [{"prompt": "q", "completion": "a", "label": False}]), "unpaired")
    assert rows[0].labels == [0.0] and "label" not in rows[0].meta


@pytest.mark.parametrize(
    "row, kind, where",
    [
        ({"prompt": "q", "completions": ["a", "b"], "labels": [True]}, "stepwise", "rows.jsonl:2: field 'labels'"),
        ({"prompt": "q", "completions": ["a", " "], "labels": [True, False]}, "stepwise",
         "rows.jsonl:2: field 'completions[1]'"),
        ({"prompt": "q", "completions": [], "labels": []}, "stepwise", "rows.jsonl:2: field 'completions'"),
        ({"prompt": "q", "completions": ["a"], "labels": [2]}, "stepwise", "rows.jsonl:2: field 'labels[0]'"),
        ({"prompt": "q", "completion": "a", "label": "yes"}, "unpaired", "rows.jsonl:2: field 'label'"),
        ({"prompt": "q", "completion": "a"}, "unpaired", "rows.jsonl:2: field 'label': missing"),
    ],
)
def test_bad_rows_name_file_line_field(tmp_path, row, kind, where):
    good = {"prompt": "q", "completions": ["a"], "labels": [True]} if kind == "stepwise" else \
        {"prompt": "q", "completion": "a", "label": True}
    with pytest.raises(DataError, match=where.replace("[", r"\[").replace("]", r"\]")):
        read_rows(_write(tmp_path, [good, row]), kind)
