"""Tests for tunesmith.storage: atomic files, hashing, and cache folders built once.

(Their users are covered too: the rt-snippets cache in test_data_sources, checkpoints
in test_checkpoint, the data cache in test_data_cache, GGUF conversion in
test_models_load.)
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import threading
import time
from pathlib import Path

import pytest

from tunesmith.storage import (
    COMPLETE_MARKER,
    atomic_write_bytes,
    atomic_write_text,
    build_cached_dir,
    digest_tree,
    fsync_tree,
    sha256_file,
)


# --------------------------------------------------------------------------------------
# Atomic files and hashing


def test_atomic_write_leaves_one_readable_file_and_no_temp(tmp_path):
    target = tmp_path / "sub" / "data.bin"
    atomic_write_bytes(target, b"abc")
    atomic_write_text(target, "h\u00e9")  # replaces the file
    assert target.read_bytes() == "h\u00e9".encode("utf-8")
    assert target.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in target.parent.iterdir()] == ["data.bin"]
    fsync_tree(tmp_path)  # folders and files alike


def test_sha256_file_and_digest_tree(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"one")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_bytes(b"two")
    assert sha256_file(tmp_path / "a.txt") == hashlib.sha256(b"one").hexdigest()
    # A folder: every file's relative name, then its bytes, in sorted order.
    assert digest_tree(tmp_path) == hashlib.sha256(b"a.txtone" + b"sub/b.txttwo").hexdigest()
    # A single file: its bare name, then its bytes.
    assert digest_tree(tmp_path / "sub" / "b.txt") == hashlib.sha256(b"b.txttwo").hexdigest()


# --------------------------------------------------------------------------------------
# build_cached_dir: once, atomically, across threads and processes


def _slow_build(tmp_dir: Path, log: Path) -> None:
    # Append-only log: one line per real build, whichever process runs it.
    with open(log, "a") as fh:
        fh.write("build\n")
    (tmp_dir / "payload.txt").write_text("hello")
    time.sleep(0.5)  # long enough that every caller arrives while the first is building


def _build_in_process(target: str, log: str) -> None:
    build_cached_dir(Path(target), lambda d: _slow_build(d, Path(log)), {"source": "test"})


def test_build_cached_dir_builds_once_across_threads(tmp_path):
    target = tmp_path / "models" / "thing"
    log = tmp_path / "log.txt"
    results, errors = [], []

    def worker():
        try:
            results.append(build_cached_dir(target, lambda d: _slow_build(d, log)))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert not errors
    assert results == [target] * 4
    assert log.read_text().count("build") == 1
    assert (target / "payload.txt").read_text() == "hello"
    assert (target / COMPLETE_MARKER).is_file()
    # No temp folders are left behind next to the target.
    assert sorted(p.name for p in target.parent.iterdir()) == ["thing", "thing.lock"]


def test_build_cached_dir_builds_once_across_processes(tmp_path):
    target = tmp_path / "models" / "thing"
    log = tmp_path / "log.txt"
    # spawn, not fork: a forked child inherits locks held by other threads of the test
    # process (uvicorn, tokenizers), and once hung there in CI.
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_build_in_process, args=(str(target), str(log))) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert log.read_text().count("build") == 1
    marker = json.loads((target / COMPLETE_MARKER).read_text())
    assert marker["source"] == "test"


def test_build_cached_dir_reuses_complete_folder(tmp_path):
    target = tmp_path / "thing"
    log = tmp_path / "log.txt"
    build_cached_dir(target, lambda d: _slow_build(d, log))
    build_cached_dir(target, lambda d: _slow_build(d, log))
    assert log.read_text().count("build") == 1


def test_build_cached_dir_redoes_folder_without_marker(tmp_path):
    target = tmp_path / "thing"
    target.mkdir()
    (target / "half-written.bin").write_text("junk")
    log = tmp_path / "log.txt"

    assert build_cached_dir(target, lambda d: _slow_build(d, log)) == target
    assert log.read_text().count("build") == 1
    assert not (target / "half-written.bin").exists()
    assert (target / COMPLETE_MARKER).is_file()


def test_build_cached_dir_failed_build_leaves_nothing(tmp_path):
    target = tmp_path / "thing"

    def broken(tmp_dir: Path) -> None:
        (tmp_dir / "partial").write_text("x")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        build_cached_dir(target, broken)
    assert not target.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["thing.lock"]

    # A leftover temp folder from a crashed build is cleaned up by the next build.
    (tmp_path / ".thing.tmp-crashed").mkdir()
    build_cached_dir(target, lambda d: (d / "ok").write_text("ok"))
    assert (target / "ok").is_file()
    assert not (tmp_path / ".thing.tmp-crashed").exists()
