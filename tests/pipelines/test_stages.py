"""The one stage runner (alignkit.pipelines.stages): reuse, re-runs on a changed fingerprint, interrupted
training, and a resume ledger that a crash while writing cannot damage. The pipelines' own tests rerun
whole pipelines on top of this (test_longreward_pipeline, test_critic_train, test_self_critique_pipeline)."""

from __future__ import annotations

import builtins
import io
import json

import pytest
from rich.console import Console

from alignkit.pipelines.stages import PipelineError, Stages, fingerprint, read_rows


def _stages(out) -> Stages:
    out.mkdir(exist_ok=True)
    return Stages(out, Console(file=io.StringIO()))


def _counting_stage(out, calls: list[str]):
    def make() -> None:
        calls.append("ran")
        (out / "a.txt").write_text("a")

    return make


def test_an_unchanged_stage_is_reused_and_a_changed_fingerprint_runs_it_again(tmp_path):
    calls: list[str] = []
    make = _counting_stage(tmp_path, calls)
    first = _stages(tmp_path)
    assert first.run("a", fingerprint("settings", 1), [tmp_path / "a.txt"], make) is True
    assert calls == ["ran"] and first.reused == []

    again = _stages(tmp_path)  # a rerun of the same output_dir reads the ledger
    assert again.run("a", fingerprint("settings", 1), [tmp_path / "a.txt"], make) is False
    assert calls == ["ran"] and again.reused == ["a"] and again.timings["a"] == first.timings["a"]

    changed = _stages(tmp_path)
    assert changed.run("a", fingerprint("settings", 2), [tmp_path / "a.txt"], make) is True
    assert calls == ["ran", "ran"] and changed.reused == []

    (tmp_path / "a.txt").unlink()  # same fingerprint, output gone: runs again
    assert _stages(tmp_path).run("a", fingerprint("settings", 2), [tmp_path / "a.txt"], make) is True
    assert calls == ["ran", "ran", "ran"]


def test_a_stage_that_raises_is_not_recorded_as_done(tmp_path):
    def boom() -> None:
        (tmp_path / "a.txt").write_text("partial")
        raise RuntimeError("stage failed")

    with pytest.raises(RuntimeError, match="stage failed"):
        _stages(tmp_path).run("a", "fp", [tmp_path / "a.txt"], boom)
    calls: list[str] = []
    assert _stages(tmp_path).run("a", "fp", [tmp_path / "a.txt"], _counting_stage(tmp_path, calls)) is True
    assert calls == ["ran"]


def test_training_resumes_only_an_interrupted_attempt_with_the_same_fingerprint(tmp_path):
    model_dir = tmp_path / "model"
    seen: list[bool] = []

    def train(resume: bool) -> dict:
        seen.append(resume)
        return {"interrupted": True, "signal": "SIGTERM"}

    with pytest.raises(PipelineError, match="interrupted .SIGTERM.; rerun"):
        _stages(tmp_path).train("train", "fp1", model_dir, train)
    (model_dir / "checkpoints" / "step-1").mkdir(parents=True)  # what the interrupted run left
    (model_dir / "checkpoints" / "step-1" / "trainer_state.json").write_text("{}")
    ledger = json.loads((tmp_path / "stages.json").read_text())
    assert ledger["train"] == {"started": "fp1"}  # started, never finished

    def finish(resume: bool) -> dict:
        seen.append(resume)
        (model_dir / "config.json").write_text("{}")
        (model_dir / "summary.json").write_text('{"steps": 2}')
        return {"steps": 2}

    assert _stages(tmp_path).train("train", "fp1", model_dir, finish) == {"steps": 2}
    assert seen == [False, True]
    reused = _stages(tmp_path)
    assert reused.train("train", "fp1", model_dir, finish) == {"steps": 2} and reused.reused == ["train"]
    # another fingerprint starts over: older checkpoints (another config's) are removed
    assert _stages(tmp_path).begin_training("train", "fp2", model_dir) is False
    assert not (model_dir / "checkpoints").exists()


def test_a_crash_while_the_ledger_is_written_leaves_the_previous_ledger(tmp_path, monkeypatch):
    """The ledger is replaced atomically: a writer that dies half-way (disk full, kill) leaves the old
    stages.json complete. (With a plain write_text the file was truncated and half-written: the next run
    could not read it.)"""
    stages = _stages(tmp_path)
    stages.run("a", "fp-a", [], lambda: None)
    before = (tmp_path / "stages.json").read_text()
    real_open = builtins.open

    class _HalfWriter:
        def __init__(self, fh):
            self.fh = fh

        def write(self, data):
            self.fh.write(data[: len(data) // 2])
            self.fh.flush()
            raise OSError(28, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self.fh.__exit__(*exc)

    def crashing_open(file, mode="r", *args, **kwargs):
        fh = real_open(file, mode, *args, **kwargs)
        return _HalfWriter(fh) if "w" in mode and "stages.json" in str(file) else fh

    monkeypatch.setattr(builtins, "open", crashing_open)
    monkeypatch.setattr(io, "open", crashing_open)
    with pytest.raises(OSError, match="No space left"):
        stages.run("b", "fp-b", [], lambda: None)
    monkeypatch.undo()
    assert (tmp_path / "stages.json").read_text() == before
    assert json.loads(before)["a"]["fingerprint"] == "fp-a"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stages.json"]  # no temporary file left behind
    assert _stages(tmp_path).run("a", "fp-a", [], lambda: None) is False  # still resumes


def test_a_damaged_stage_file_is_a_data_error_naming_file_and_line(tmp_path):
    """Stage files are read back with the one row reader: a torn line names file:line, not a traceback."""
    from alignkit.errors import DataError

    path = tmp_path / "samples.jsonl"
    path.write_text('{"prompt_id": "p0", "response": "a"}\n\n{"prompt_id": "p1", "resp')
    with pytest.raises(DataError, match=r"samples\.jsonl:3: invalid JSON"):
        read_rows(path)
    path.write_text('{"prompt_id": "p0"}\n\n{"prompt_id": "p1"}\n')
    assert read_rows(path) == [{"prompt_id": "p0"}, {"prompt_id": "p1"}]
    path.write_text("")
    assert read_rows(path) == []  # a stage may legitimately write no rows
