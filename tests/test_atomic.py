"""The one atomic writer: complete files or nothing, ordinary permissions, the directory variant."""

import json
import os

import pytest

from alignkit.atomic import atomic_open, replace_dir, write_atomic, write_jsonl_atomic


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    p = tmp_path / "out.jsonl"
    write_atomic(p, "old\n")

    def rows():
        yield {"a": 1}
        raise RuntimeError("generator failed half-way")

    with pytest.raises(RuntimeError):
        write_jsonl_atomic(p, rows())
    assert p.read_text() == "old\n" and os.listdir(tmp_path) == ["out.jsonl"]


def test_complete_write_with_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        n = write_jsonl_atomic(tmp_path / "d" / "x.jsonl", [{"é": 1}, {"b": 2}])
    finally:
        os.umask(old)
    p = tmp_path / "d" / "x.jsonl"
    assert n == 2 and [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines()] == [{"é": 1}, {"b": 2}]
    assert p.stat().st_mode & 0o777 == 0o644
    with atomic_open(tmp_path / "b.bin", "wb") as fh:
        fh.write(b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"


def test_replace_dir_swaps_a_whole_tree(tmp_path):
    final, tmp = tmp_path / "ckpt", tmp_path / ".tmp-ckpt"
    final.mkdir()
    (final / "old.bin").write_text("old")
    tmp.mkdir()
    (tmp / "new.bin").write_text("new")
    replace_dir(tmp, final)
    assert sorted(os.listdir(final)) == ["new.bin"] and not tmp.exists()
