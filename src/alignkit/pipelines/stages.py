"""The one stage runner of every multi-stage pipeline (``alignkit demo``, ``pipeline longreward``,
``pipeline self-critique``, ``pipeline self-reflect``, ``critic train``).

A pipeline is a sequence of named stages, each writing its files under the run's ``output_dir``. Each
stage has a **fingerprint**: a short hash of everything its outputs depend on (the settings it reads, the
fingerprints or file hashes of the stages before it). The **resume ledger** ``<output_dir>/stages.json``
records, per stage, the fingerprint it last finished with, the fingerprint it last started with and
its wall time::

    {"sample": {"fingerprint": "3f2a...", "started": "3f2a...", "seconds": 41.2}, ...}

On a rerun of the same ``output_dir`` a stage whose fingerprint is unchanged and whose outputs exist
is reused (not run); a changed fingerprint runs it again. A training stage that started but never
finished with the same fingerprint resumes from its last checkpoint. The ledger is written atomically
(:func:`alignkit.atomic.write_atomic`), so a crash while it is written leaves the previous ledger.

Usage::

    stages = Stages.open(cfg)                      # creates output_dir, saves config.yaml, reads stages.json
    fp = fingerprint(file_hash(stages.out / "prompts.jsonl"), cfg.sampling.model_dump())
    stages.run("sample", fp, [stages.out / "samples.jsonl"], lambda: write_samples(...))
    summary = stages.train("train", fp_train, stages.out / "model", lambda resume: train(cfg, resume=resume))
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alignkit.atomic import write_atomic
from alignkit.fingerprints import file_sha256, sha256_hex


class PipelineError(RuntimeError):
    """A stage cannot go on (for example: no preference pair survived); the message says why."""


def fingerprint(*parts: Any) -> str:
    """A 16-hex-digit hash of JSON-serialisable ``parts`` (settings, earlier fingerprints, file hashes)."""
    return sha256_hex(list(parts))[:16]


def file_hash(path: Path) -> str:
    """The content hash of a stage's file for a fingerprint (``"missing"`` when there is no file)."""
    return file_sha256(path)[:16] if path.is_file() else "missing"


def read_rows(path: Path) -> list[dict]:
    """The rows of a JSONL file a stage wrote (possibly none); a damaged file is a DataError naming file:line."""
    from alignkit.data.records import read_objects

    return [rec.value for rec in read_objects(path, allow_empty=True)]


class Stages:
    """Fingerprinted stage bookkeeping of one pipeline run: the resume ledger, the console, stage times.

    ``timings`` holds each stage's wall time in seconds (a reused stage: its time when it ran);
    ``reused`` the names of the stages reused from an earlier run, in order.
    """

    LEDGER = "stages.json"

    def __init__(self, out: Path, console: Any):
        self.out = out
        self.path = out / self.LEDGER
        self.done: dict[str, dict[str, Any]] = json.loads(self.path.read_text()) if self.path.is_file() else {}
        self.console = console
        self.timings: dict[str, float] = {}
        self.reused: list[str] = []

    @classmethod
    def open(cls, cfg: Any, console: Any = None) -> Stages:
        """Start a run of the pipeline configured by ``cfg``: create ``cfg.output_dir``, save the resolved
        config there as ``config.yaml`` and read the ledger of earlier runs. ``console``: a rich Console
        (default: one on stderr)."""
        from rich.console import Console

        from alignkit.config import dump_config

        out = Path(cfg.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        dump_config(cfg, out / "config.yaml")
        return cls(out, console if console is not None else Console(stderr=True))

    def fresh(self, name: str, fp: str, outputs: list[Path], title: str | None = None) -> bool:
        """True when stage ``name`` must run: its last finished fingerprint differs from ``fp`` or one of
        its ``outputs`` is missing. Otherwise it is recorded as reused (with its earlier time). ``title``
        is the heading printed when it runs (default ``stage NAME``)."""
        prev = self.done.get(name, {})
        if prev.get("fingerprint") == fp and all(p.exists() for p in outputs):
            self.console.print(f"[bold]stage {name}[/]: unchanged since the last run, reused")
            self.timings[name] = prev.get("seconds", 0.0)
            self.reused.append(name)
            return False
        self.console.rule(f"[bold]{title or f'stage {name}'}")
        return True

    def begin(self, name: str, fp: str) -> bool:
        """Record that ``name`` starts with ``fp``; True when an earlier attempt with the same fingerprint
        started and never finished (it was interrupted and may be resumed)."""
        prev = self.done.get(name, {})
        interrupted = prev.get("started") == fp and prev.get("fingerprint") != fp
        self.done[name] = {**prev, "started": fp}
        self._save()
        return interrupted

    def begin_training(self, name: str, fp: str, model_dir: Path) -> bool:
        """Start the training stage ``name`` writing to ``model_dir``: True when an interrupted attempt with
        the same fingerprint left a checkpoint to resume from; otherwise older checkpoints are removed
        (another config's) and the training starts over."""
        from alignkit.train.checkpoint import CKPT_DIR, latest_checkpoint

        resume = self.begin(name, fp) and latest_checkpoint(model_dir) is not None
        if resume:
            self.console.print(f"resuming the interrupted {name} from {latest_checkpoint(model_dir)}")
        else:
            shutil.rmtree(model_dir / CKPT_DIR, ignore_errors=True)
        return resume

    def finish(self, name: str, fp: str, started: float) -> None:
        """Record that ``name`` finished with ``fp`` (``started``: its ``time.time()`` at the start)."""
        self.timings[name] = round(time.time() - started, 1)
        self.console.print(f"stage {name}: {self.timings[name]:.0f} s")
        self.done[name] = {"fingerprint": fp, "started": fp, "seconds": self.timings[name]}
        self._save()

    def run(self, name: str, fp: str, outputs: list[Path], make: Callable[[], Any], title: str | None = None) -> bool:
        """Run ``make()`` (which writes ``outputs``) unless the stage is reused; True when it ran."""
        if not self.fresh(name, fp, outputs, title):
            return False
        started = time.time()
        make()
        self.finish(name, fp, started)
        return True

    def train(self, name: str, fp: str, model_dir: Path, fn: Callable[[bool], dict[str, Any]],
              title: str | None = None) -> dict[str, Any]:
        """A training stage into ``model_dir``: ``fn(resume)`` trains (resuming from the last checkpoint
        when an interrupted attempt with the same fingerprint left one) and returns the recipe's summary.
        Returns the summary (``model_dir/summary.json`` when the stage is reused, ``{}`` if there is none);
        an interrupted training (a signal) is a :class:`PipelineError`: rerun the pipeline to continue."""
        if self.fresh(name, fp, [model_dir / "config.json"], title):
            started = time.time()
            summary = fn(self.begin_training(name, fp, model_dir))
            if summary.get("interrupted"):
                raise PipelineError(f"{name} was interrupted ({summary.get('signal')}); rerun the pipeline to "
                                    "continue from its last checkpoint")
            self.finish(name, fp, started)
            return summary
        summary_path = model_dir / "summary.json"
        return json.loads(summary_path.read_text()) if summary_path.is_file() else {}

    def _save(self) -> None:
        write_atomic(self.path, json.dumps(self.done, indent=1))
