"""Atomic output writes (gwsim/output.py): a reader sees the old file or the new one, never half.

Every writer goes through a temporary file in the target's directory and ``os.replace``.  A
failure or a Ctrl-C in the middle of a write leaves the previous content and no temporary file;
a place that cannot be written is reported as one line (``UsageError``).
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pandas as pd
import pytest

from gwsim import output
from gwsim.output import atomic_write_bytes, atomic_write_json, atomic_write_parquet, atomic_write_text, ensure_dir
from simulator.errors import UsageError


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_each_writer_leaves_only_the_target(tmp_path):
    frame = pd.DataFrame({"id": [1, 2, 3], "latency_s": [0.1, 0.2, 0.3]})
    atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01")
    atomic_write_text(tmp_path / "b.txt", "héllo\n")
    atomic_write_json(tmp_path / "c.json", {"p95": 1.5})
    atomic_write_parquet(tmp_path / "d.parquet", frame)
    assert _names(tmp_path) == ["a.bin", "b.txt", "c.json", "d.parquet"]
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "b.txt").read_text(encoding="utf-8") == "héllo\n"
    assert json.loads((tmp_path / "c.json").read_text()) == {"p95": 1.5}
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "d.parquet"), frame)


def test_rename_from_a_temporary_in_the_same_directory(tmp_path, monkeypatch):
    """os.replace within one directory (one file system) is what makes the write atomic."""
    calls = []
    real = os.replace

    def spy(src, dst):
        calls.append((Path(src), Path(dst)))
        assert Path(dst).exists() is False or Path(dst).read_text() == "old"  # target untouched until the rename
        real(src, dst)

    (tmp_path / "s.json").write_text("old")
    monkeypatch.setattr(output.os, "replace", spy)
    atomic_write_json(tmp_path / "s.json", {"new": True})
    assert len(calls) == 1
    src, dst = calls[0]
    assert src.parent == dst.parent == tmp_path
    assert src.name.startswith(".s.json.") and src != dst
    assert json.loads(dst.read_text()) == {"new": True}


@pytest.mark.parametrize("error", [RuntimeError("disk on fire"), KeyboardInterrupt()], ids=["failure", "ctrl-c"])
def test_interrupted_parquet_write_keeps_the_old_file(tmp_path, monkeypatch, error):
    target = tmp_path / "records.parquet"
    old = pd.DataFrame({"id": [1]})
    atomic_write_parquet(target, old)

    def half_then_fail(table, path, **kwargs):
        Path(path).write_bytes(b"PAR1 half a file")
        raise error

    import pyarrow.parquet as pq

    monkeypatch.setattr(pq, "write_table", half_then_fail)
    with pytest.raises(type(error)):
        atomic_write_parquet(target, pd.DataFrame({"id": [1, 2, 3]}))
    monkeypatch.undo()
    assert _names(tmp_path) == ["records.parquet"]  # no temporary left behind
    pd.testing.assert_frame_equal(pd.read_parquet(target), old)


def test_disk_error_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "summary.json"
    target.write_text('{"old": 1}')

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(output.os, "fsync", full)
    with pytest.raises(UsageError) as info:
        atomic_write_json(target, {"new": 2})
    assert str(info.value) == f"{target}: expected a writable location, got no space left on device"
    assert _names(tmp_path) == ["summary.json"]
    assert target.read_text() == '{"old": 1}'


def test_json_that_cannot_be_written_fails_before_touching_the_disk(tmp_path):
    with pytest.raises(ValueError):
        atomic_write_json(tmp_path / "s.json", {"p95": float("nan")})  # JSON has no NaN
    assert _names(tmp_path) == []


def test_unwritable_places_are_one_line(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(UsageError) as info:
        atomic_write_text(blocker / "out.txt", "y")
    assert str(info.value) == f"{blocker / 'out.txt'}: expected a writable location, got not a directory"
    with pytest.raises(UsageError) as info:
        atomic_write_text(tmp_path / "missing" / "out.txt", "y")
    assert str(info.value) == f"{tmp_path / 'missing' / 'out.txt'}: expected a writable location, got no such file or directory"
    with pytest.raises(UsageError) as info:
        atomic_write_text(tmp_path, "y")
    assert str(info.value) == f"{tmp_path}: expected a file path, got a directory"
    assert blocker.read_text() == "x"


def test_ensure_dir(tmp_path):
    assert ensure_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert (tmp_path / "a" / "b").is_dir()
    (tmp_path / "f").write_text("x")
    with pytest.raises(UsageError) as info:
        ensure_dir(tmp_path / "f")
    assert str(info.value) == f"--out {tmp_path / 'f'}: expected a directory, got a file"
    with pytest.raises(UsageError) as info:
        ensure_dir(tmp_path / "f" / "sub")
    assert str(info.value) == f"--out {tmp_path / 'f' / 'sub'}: expected a writable directory, got not a directory"


def test_a_concurrent_reader_never_sees_half_a_file(tmp_path):
    """A reader polling the file while it is rewritten 40 times always parses a whole JSON document."""
    target = tmp_path / "summary.json"
    atomic_write_json(target, {"n": -1, "pad": "x" * 200_000})
    done = threading.Event()
    seen: list[int] = []
    broken: list[str] = []

    def reader() -> None:
        while not done.is_set():
            text = target.read_text()
            try:
                seen.append(json.loads(text)["n"])
            except json.JSONDecodeError:
                broken.append(text[:40])

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for n in range(40):
            atomic_write_json(target, {"n": n, "pad": "x" * 200_000})
    finally:
        done.set()
        thread.join(timeout=10)
    assert broken == []
    assert seen and json.loads(target.read_text())["n"] == 39
    assert _names(tmp_path) == ["summary.json"]


def test_written_files_get_the_umask_permissions_not_the_temporary_files(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "shared.txt", "x")
        os.umask(0o077)
        atomic_write_text(tmp_path / "private.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "shared.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "private.txt").stat().st_mode & 0o777 == 0o600
