"""benchmarks/ifeval_scoring.py stays runnable: its rows are valid, cover every instruction type, and a
small run meets the throughput target it checks."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from alignkit.evals.ifeval.checkers import INSTRUCTIONS
from alignkit.evals.ifeval.scoring import row_checks

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "ifeval_scoring.py"


def _bench():
    spec = importlib.util.spec_from_file_location("ifeval_scoring", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_rows_are_valid_and_cover_every_instruction(monkeypatch, capsys):
    bench = _bench()
    rows, responses = bench.build_rows(120, 60)
    for row in rows:
        row_checks(row)
    assert {i for r in rows for i in r.instruction_id_list} == set(INSTRUCTIONS)
    monkeypatch.setattr("sys.argv", ["ifeval_scoring.py", "--prompts", "40", "--words", "60"])
    assert bench.main() == 0
    assert "prompts/s" in capsys.readouterr().out
