"""Progress bars for the long data steps, shown only when a step is long enough to wait for."""

from __future__ import annotations

import os
import sys

SHOW_FROM = 50_000  # rows; below this a step takes about a second


def progress(items, desc: str, total: int | None = None):
    """``items`` wrapped in a tqdm bar on stderr when there are many and the terminal wants one."""
    from tqdm import tqdm

    count = total if total is not None else (len(items) if hasattr(items, "__len__") else None)
    quiet = os.environ.get("TUNESMITH_NO_PROGRESS") or (count is not None and count < SHOW_FROM)
    return tqdm(items, desc=desc, total=count, unit="row", disable=bool(quiet), mininterval=1, file=sys.stderr)
