"""The one progress display for long work (training, generation, reference log-probs, judging, evals).

On a terminal it is a rich bar per task (label, bar, done/total, an info text such as the loss,
elapsed and remaining time). When stdout is not a terminal (a log file, CI, ``make demo > log``)
a bar would print nothing useful, so it prints a plain line per task every 10% of the total or
every 30 s, whichever comes first, and at the end::

    generate: 96/384 (25%) 3.1/s, elapsed 31s, ETA 1m33s

Disabled, it prints nothing. Advancing is thread-safe (judge jobs finish on pool threads).
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, TextIO


def _duration(s: float) -> str:
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


@dataclass
class _Task:
    label: str
    total: int
    done: int
    start: float
    start_done: int
    last_t: float
    last_done: int
    info: str = ""
    rich_id: Any = None


class Progress:
    """``with Progress(enabled) as p: t = p.task("generate", total=n); p.advance(t)``."""

    def __init__(self, enabled: bool = True, every_fraction: float = 0.1, every_s: float = 30.0,
                 stream: TextIO | None = None, terminal: bool | None = None, clock=time.monotonic):
        self.enabled = enabled
        self.every_fraction, self.every_s = every_fraction, every_s
        self._stream = stream
        self._terminal = terminal
        self._clock = clock
        self._lock = threading.Lock()
        self._rich = None
        self._tasks: list[_Task] = []

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stdout

    def __enter__(self) -> Progress:
        terminal = self.stream.isatty() if self._terminal is None else self._terminal
        if self.enabled and terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._rich = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn())
            self._rich.__enter__()
        return self

    def __exit__(self, *exc) -> bool:
        if self._rich is not None:
            self._rich.__exit__(*exc)
            self._rich = None
        return False

    def task(self, label: str, total: int, completed: int = 0) -> _Task:
        """Start a task of ``total`` units (``completed`` already done, e.g. on resume)."""
        now = self._clock()
        t = _Task(label, total, completed, now, completed, now, completed)
        with self._lock:
            self._tasks.append(t)
            if self._rich is not None:
                t.rich_id = self._rich.add_task(label, total=total, completed=completed, info="")
        return t

    def describe(self, task: _Task, label: str) -> None:
        with self._lock:
            task.label = label
            if self._rich is not None:
                self._rich.update(task.rich_id, description=label)

    def advance(self, task: _Task, n: int = 1, info: str | None = None) -> None:
        """Count ``n`` more units done; ``info`` replaces the task's info text (e.g. the loss)."""
        with self._lock:
            task.done += n
            if info is not None:
                task.info = info
            if self._rich is not None:
                self._rich.update(task.rich_id, advance=n, info=task.info)
            elif self.enabled and n:
                self._maybe_print(task)

    def _maybe_print(self, t: _Task) -> None:
        now = self._clock()
        step = max(1, int(t.total * self.every_fraction)) if t.total else 1
        due = t.done >= t.total or t.done - t.last_done >= step or now - t.last_t >= self.every_s
        if not due:
            return
        t.last_t, t.last_done = now, t.done
        elapsed = now - t.start
        rate = (t.done - t.start_done) / elapsed if elapsed > 0 else 0.0
        parts = [f"{t.label}: {t.done}/{t.total}" + (f" ({100 * t.done / t.total:.0f}%)" if t.total else "")]
        if rate > 0:
            parts.append(f"{rate:.3g}/s, elapsed {_duration(elapsed)}")
            if t.done < t.total:
                parts.append(f"ETA {_duration((t.total - t.done) / rate)}")
        if t.info:
            parts.append(t.info)
        print(", ".join(parts), file=self.stream, flush=True)


class ProgressBar:
    """A :class:`Progress` with one task: ``with ProgressBar("train", total) as bar: bar.advance(info=...)``."""

    def __init__(self, label: str, total: int, enabled: bool = True, completed: int = 0, **kw: Any):
        self._progress = Progress(enabled, **kw)
        self._spec = (label, total, completed)

    def __enter__(self) -> ProgressBar:
        self._progress.__enter__()
        self._task = self._progress.task(*self._spec)
        return self

    def __exit__(self, *exc) -> bool:
        return self._progress.__exit__(*exc)

    def advance(self, n: int = 1, info: str | None = None) -> None:
        self._progress.advance(self._task, n, info)

    def describe(self, label: str) -> None:
        self._progress.describe(self._task, label)
