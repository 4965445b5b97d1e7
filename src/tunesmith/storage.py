"""Atomic writes, cache folders built exactly once, and file hashing.

The one place for putting files on disk so that a reader (or a second run racing to
build the same thing) never sees half of them, and for the sha256 digests that key
caches and check checkpoints. Standard library plus ``filelock`` only, so anything can
use it without pulling in torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "COMPLETE_MARKER",
    "atomic_write_bytes",
    "atomic_write_text",
    "build_cached_dir",
    "digest_tree",
    "fsync_tree",
    "sha256_file",
]

# Written into a cache folder as the very last step of building it. A folder without it
# is a leftover from an interrupted build and is never used.
COMPLETE_MARKER = ".complete"

_BLOCK = 1 << 20  # read files in 1 MiB blocks: constant memory for multi-GB weights


# --------------------------------------------------------------------------------------
# Atomic files


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temp file in the same folder + os.replace, so readers (and other
    runs racing to build the same cache file) only ever see a complete file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; the cache is a normal file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def fsync_tree(root: Path) -> None:
    """fsync every file and folder under ``root`` (and ``root`` itself), so a rename
    that publishes them is only seen after their contents are on disk."""
    for path in [*root.rglob("*"), root]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# --------------------------------------------------------------------------------------
# Hashing


def sha256_file(path: Path) -> str:
    """The hex sha256 of one file's contents."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(_BLOCK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def digest_tree(path: Path) -> str:
    """The hex sha256 of a file, or of every file in a folder, names included.

    Each file adds its name (relative to the folder; its bare name for a single file)
    and then its contents, in sorted order, so renaming a file changes the digest too.
    """
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with file.open("rb") as fh:
            for block in iter(lambda: fh.read(_BLOCK), b""):
                digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------
# Building a cache folder exactly once, safely across processes


def build_cached_dir(
    target: Path,
    build: Callable[[Path], None],
    info: dict[str, Any] | None = None,
) -> Path:
    """Return ``target``, building it with ``build(tmp_dir)`` first if it is not complete.

    Safe when several processes (or threads) ask for the same folder at once:

    * a file lock next to ``target`` lets only one of them build;
    * the others wait, then re-check and find the finished folder;
    * ``build`` writes into a temporary sibling folder, which gets the ``.complete`` marker
      last and is then renamed into place, so ``target`` never appears half-written;
    * a ``target`` without the marker (from an older or interrupted scheme) is deleted
      and rebuilt, never used.
    """
    from filelock import FileLock

    target = Path(target)
    if _is_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        # Someone else may have finished while we waited for the lock.
        if _is_complete(target):
            return target
        if target.exists():
            shutil.rmtree(target)
        # Only the lock holder creates temp folders, so any found now are left over from
        # a build that crashed; they are just wasted disk.
        for stale in target.parent.glob(f".{target.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            build(tmp)
            _make_readable(tmp)
            marker = {**(info or {}), "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            (tmp / COMPLETE_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target


def _make_readable(folder: Path) -> None:
    # mkdtemp creates 0700 folders and some writers (safetensors) 0600 files; a cache
    # entry should have ordinary permissions like anything else the user creates.
    folder.chmod(0o755)
    for path in folder.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def _is_complete(folder: Path) -> bool:
    return (folder / COMPLETE_MARKER).is_file()
