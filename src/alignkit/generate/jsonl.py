"""JSONL input/output for generation and judging, on the shared reader and writer.

Rows are read by :mod:`alignkit.data.records` (a bad row stops the command with
``file:line: field 'x': problem`` before any output is written) and written by
:mod:`alignkit.atomic` (outputs appear under their final name only once complete).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alignkit.atomic import write_jsonl_atomic  # noqa: F401  (re-exported for the commands)
from alignkit.data.records import check_prompt, read_objects, require_str  # noqa: F401  (re-exported)


def read_jsonl(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """``(line_number, row)`` for every row; each row must be a JSON object, and there must be one."""
    return [(rec.line, rec.value) for rec in read_objects(path)]
