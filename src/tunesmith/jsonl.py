"""JSON-lines files: the format of every row-per-line file Tunesmith reads or writes."""

from __future__ import annotations

import json
from pathlib import Path


def read_jsonl(path: Path) -> list[dict]:
    """The rows of ``path`` ([] when it does not exist); blank lines are skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def write_jsonl(path: Path, rows: list[dict], *, drop_private: bool = False) -> Path:
    """Write ``rows`` one per line (UTF-8, not escaped). ``drop_private`` leaves out the
    loader's bookkeeping keys (those starting with ``_``, such as ``_where``)."""
    path = Path(path)
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            if drop_private:
                row = {k: v for k, v in row.items() if not k.startswith("_")}
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path
