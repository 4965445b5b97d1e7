"""Where Tunesmith keeps things outside a run directory."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """The user cache dir (``$TUNESMITH_CACHE`` or ``~/.cache/tunesmith``), created on demand.

    Converted models and unpacked packaged datasets live here so they are built once
    and reused by every later run.
    """
    root = Path(os.environ.get("TUNESMITH_CACHE") or Path.home() / ".cache" / "tunesmith")
    root.mkdir(parents=True, exist_ok=True)
    return root
