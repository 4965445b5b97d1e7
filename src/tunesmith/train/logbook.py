"""The run's JSON-lines logs: metrics.jsonl (every log_every steps), eval.jsonl (every
evaluation) and events.jsonl (guard skips, rollbacks, early stop).

Lines are flushed as they are written, so a crashed run keeps everything up to its last
step; on resume or rollback the lines after the restored step are dropped, because the
run writes them again. Only the main process writes.
"""

from __future__ import annotations

import json
from pathlib import Path

from tunesmith.rundir import LOGBOOK_FILES


def truncate_jsonl(path: Path, after_step: int) -> None:
    """Drop lines logged after ``after_step``, and any line a kill tore in half (it cannot
    be read, and the resumed run logs that step again)."""
    if path.is_file():
        kept = []
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and row.get("step", 0) <= after_step:
                kept.append(line)
        path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


class Logbook:
    """Append-only writers of the three log files of ``run_dir``."""

    def __init__(self, run_dir: Path, is_main: bool = True, trackers=None):
        self.run_dir, self.is_main = Path(run_dir), is_main
        self.trackers = trackers  # train/tracking.Trackers: a live copy for TensorBoard / MLflow
        self._files: dict = {}

    def open(self) -> "Logbook":
        if self.is_main:
            self._files = {name: (self.run_dir / f"{name}.jsonl").open("a", encoding="utf-8")
                           for name in ("metrics", "eval", "events")}
        return self

    def write(self, name: str, record: dict) -> None:
        if self.is_main:
            fh = self._files[name]
            fh.write(json.dumps(record) + "\n")
            fh.flush()
            if self.trackers is not None:
                self.trackers.log(name, record)

    def event(self, step: int, kind: str, **info) -> None:
        self.write("events", {"step": step, "event": kind, **info})

    def rewind(self, step: int, names=("metrics", "eval")) -> None:
        """Drop the lines after ``step`` (events.jsonl keeps its record of a rollback by default)."""
        if not self.is_main:
            return
        if self.trackers is not None:
            self.trackers.rewind(step)
        for name in names:
            fh = self._files.pop(name, None)
            if fh:
                fh.close()
            truncate_jsonl(self.run_dir / f"{name}.jsonl", step)
            if fh:
                self._files[name] = (self.run_dir / f"{name}.jsonl").open("a", encoding="utf-8")

    def rewind_all(self, step: int) -> None:
        """Before a resume: every log back to ``step``."""
        self.rewind(step, tuple(name.removesuffix(".jsonl") for name in LOGBOOK_FILES))

    def close(self) -> None:
        for fh in self._files.values():
            fh.close()
        self._files = {}
