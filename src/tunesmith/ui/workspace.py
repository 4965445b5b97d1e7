"""The UI's workspace: one folder holding everything the UI reads and writes.

``runs/<name>/`` (run directories, exactly as ``tunesmith train`` writes them, and their
``export-<format>/`` folders), ``recipes/<name>.yaml`` (what the New-run form submitted),
``data/`` (uploads) and ``reviews/<id>/`` (blind reviews and their votes). The UI holds no
other state: the runs list, each run's status and the job queue are read from these folders.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from tunesmith.objectives.tasks import TASKS
from tunesmith.rundir import LOGBOOK_FILES, RunDir
from tunesmith.ui.jobs import process_alive
from tunesmith.ui.security import inside, safe_name

EXPORT_PREFIX = "export-"


class Workspace:
    """The folders of one UI workspace (created on first use)."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self.runs, self.recipes, self.data, self.reviews = (
            self.root / sub for sub in ("runs", "recipes", "data", "reviews"))
        for folder in (self.runs, self.recipes, self.data, self.reviews):
            folder.mkdir(parents=True, exist_ok=True)

    def run_dir(self, name: str) -> Path:
        """``runs/<name>`` for a safe ``name`` (400 otherwise), symlinks resolved inside the workspace."""
        return inside(self.runs, safe_name(name, "run name"), "run")

    def job_folders(self) -> list[Path]:
        """Every folder that may hold a job record: run directories and their export folders."""
        folders = []
        for run in self.runs.iterdir():
            if run.is_dir():
                folders.append(run)
                folders += [p for p in run.iterdir() if p.is_dir() and p.name.startswith(EXPORT_PREFIX)]
        return folders

    # ---- the runs list --------------------------------------------------------------------
    def list_runs(self) -> list[dict]:
        """One row per run directory, newest first: name, status, task, method, headline
        metric, start time and duration. Reads only summary.json and the job record."""
        rows = [run_row(p) for p in self.runs.iterdir() if p.is_dir()]
        return sorted(rows, key=lambda r: r["started"] or 0, reverse=True)

    def run_detail(self, name: str) -> dict:
        """The run's row plus its summary, resolved config, logbook sizes and files."""
        folder = self.run_dir(name)
        if not folder.is_dir():
            from fastapi import HTTPException

            raise HTTPException(404, f"No run named {name!r} in this workspace.")
        run = RunDir(folder)
        config = folder / "config.yaml"
        return {**run_row(folder), "summary": run.read_summary(),
                "config": config.read_text(encoding="utf-8") if config.is_file() else None,
                "files": sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                                if p.is_file() and "checkpoints" not in p.parts),
                "exports": [export_row(p) for p in sorted(folder.glob(EXPORT_PREFIX + "*")) if p.is_dir()],
                "log_tail": tail(run.job_log, 40)}


def run_status(summary: dict, job: dict) -> str:
    """What the runs list shows: queued / running while the UI's process is active, else the
    run's own summary status, else what the process's exit says."""
    state = job.get("state")
    if state == "queued":
        return "queued"
    if state == "running" and process_alive(job.get("pid"), job.get("pid_started")):
        return "running"
    if state == "cancelled":
        return "cancelled"
    status = summary.get("status")
    if status and status != "running":
        return status
    if state == "exited":
        return "failed" if job.get("returncode") not in (0, None) or not summary else "completed"
    return status or "unknown"


def run_row(folder: Path) -> dict:
    """The runs-list row of one run directory."""
    run = RunDir(folder)
    try:
        summary = run.read_summary()
    except ValueError:
        summary = {}
    job = run.read_job()
    task = summary.get("task") or job.get("task")
    metric = summary.get("headline") or (TASKS[task].headline if task in TASKS else None)
    after = summary.get("eval_after") or {}
    train = summary.get("train") or {}
    started = job.get("started_at") or job.get("queued_at") or _summary_time(summary)
    duration = summary.get("total_wall_s")
    if duration is None and job.get("started_at"):
        duration = (job.get("ended_at") or time.time()) - job["started_at"]
    return {"name": folder.name, "status": run_status(summary, job), "task": task,
            "method": summary.get("method") or job.get("method"), "metric": metric,
            "value": after.get(metric) if metric else None, "before": (summary.get("eval_before") or {}).get(metric),
            "started": started, "duration_s": round(duration, 1) if duration is not None else None,
            "steps": train.get("steps"), "error": summary.get("error")}


def export_row(folder: Path) -> dict:
    """An export folder: its format, job state and the gate's results (export.json)."""
    job = RunDir(folder).read_job()
    report_path = folder / "export.json"
    try:
        report = json.loads(report_path.read_text(encoding="utf-8")) if report_path.is_file() else None
    except ValueError:
        report = None
    # The queue turns "running" into "exited" (with the exit code) within a tick of the end.
    return {"format": folder.name.removeprefix(EXPORT_PREFIX), "state": job.get("state"),
            "returncode": job.get("returncode"),
            "report": report, "log_tail": tail(RunDir(folder).job_log, 20)}


def logbook(folder: Path, name: str, offset: int = 0) -> list[dict]:
    """Lines ``offset``.. of a logbook file; a torn last line (a write in progress) is left for later."""
    if name not in {f.removesuffix(".jsonl") for f in LOGBOOK_FILES}:
        raise ValueError(name)
    path = folder / f"{name}.jsonl"
    if not path.is_file():
        return []
    rows = []
    with path.open(encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if i < offset or not line.endswith("\n"):
                continue
            try:
                rows.append(json.loads(line))
            except ValueError:
                rows.append({})  # keep the count in step with the file's lines
    return rows


def tail(path: Path, lines: int) -> str:
    """The last ``lines`` lines of a text file ('' when it does not exist)."""
    if not path.is_file():
        return ""
    with path.open("rb") as fh:
        fh.seek(0, 2)
        fh.seek(max(0, fh.tell() - 16_000))
        return "\n".join(fh.read().decode("utf-8", "replace").splitlines()[-lines:])


def _summary_time(summary: dict) -> float | None:
    started = (summary.get("environment") or {}).get("started")
    if not started:
        return None
    try:
        return time.mktime(time.strptime(started, "%Y-%m-%d %H:%M:%S %z"))
    except ValueError:
        return None
