"""Atomic file writes: a reader sees the old file or the complete new one, never a half-written one.

The one way every output file is written: a temporary file in the destination's directory (same
filesystem, so the rename is atomic), flushed and fsynced, then renamed over the destination.
Directories (checkpoints, materialised models) are built beside their destination and moved in
with :func:`replace_dir`. A
failure part-way removes the temporary file and leaves the destination untouched. The new file
gets the usual permissions (0666 minus the umask), not ``mkstemp``'s private 0600.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any


def fsync_tree(path: str | Path) -> None:
    """fsync every file under ``path`` and the directory itself (before a directory rename)."""
    for root, _dirs, files in os.walk(path):
        for name in files:
            with open(os.path.join(root, name), "rb") as fh:
                os.fsync(fh.fileno())
    _fsync_dir(Path(path))


def replace_dir(tmp: str | Path, final: str | Path) -> None:
    """The directory variant: fsync the finished ``tmp`` tree, then rename it to ``final`` (replacing it).

    ``final`` is never partial: a crash leaves the complete tree under ``tmp`` or ``final`` (an
    existing ``final`` is removed just before the rename).
    """
    tmp, final = Path(tmp), Path(final)
    fsync_tree(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(final.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block succeeds it is fsynced and renamed to ``path``.

    For writers that need a file name (``torch.save``, ``savefig``); ``suffix`` keeps the extension
    those writers look at.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, _default_mode())
        yield Path(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """``open(path, mode)`` written atomically; ``mode`` is ``"w"`` (UTF-8 text) or ``"wb"``."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open: mode must be 'w' or 'wb', got {mode!r}")
    with atomic_path(path) as tmp:
        with open(tmp, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as fh:
            yield fh
            fh.flush()


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write text (UTF-8) or bytes to ``path`` atomically."""
    with atomic_open(path, "w" if isinstance(data, str) else "wb") as fh:
        fh.write(data)


def write_jsonl_atomic(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write rows as JSONL (UTF-8, one object a line) atomically; returns the number of rows."""
    n = 0
    with atomic_open(path, "w") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n
