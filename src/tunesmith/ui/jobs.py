"""The UI's job queue: every run and export is its own ``tunesmith`` process.

A job's record (``ui-job.json`` in the folder it writes, through :mod:`tunesmith.rundir`)
holds its command, state (``queued``, ``running``, ``exited``, ``cancelled``), pid and exit
code. The queue keeps nothing else, so a restarted UI rebuilds it from the folders: queued
jobs queue again, a job whose process still lives is watched again (and can still be
stopped), and one whose process died while the UI was away counts as exited.

At most ``limit`` jobs run at once; the rest wait in the order they were submitted.
Stopping sends SIGINT, which makes ``tunesmith train`` save a checkpoint before it exits
(status ``interrupted``), so Resume continues from there.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tunesmith.rundir import RunDir

ACTIVE = ("queued", "running")


def _proc_stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def process_start(pid: int) -> str | None:
    """When ``pid`` started (clock ticks since boot; None without /proc): with the pid, it
    names one process, so a recycled pid is not mistaken for a job's."""
    stat = _proc_stat(pid)
    return stat[19] if stat else None


def process_alive(pid: int | None, started: str | None = None) -> bool:
    """Whether ``pid`` is alive, not a zombie, and (when ``started`` is known) the same process."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    stat = _proc_stat(pid)
    if stat is None:
        return True  # no /proc (not Linux): trust the signal check
    return stat[0] != "Z" and (started is None or stat[19] == started)


def is_active(record: dict) -> bool:
    """Whether a job record is queued, or running in a process that is still alive (a record
    lags its process's end by up to one tick of the queue)."""
    state = record.get("state")
    return state == "queued" or (state == "running" and process_alive(record.get("pid"), record.get("pid_started")))


class JobQueue:
    """Runs queued ``tunesmith`` commands, at most ``limit`` at a time."""

    def __init__(self, folders, limit: int = 1, command: list[str] | None = None, poll_s: float = 0.2):
        """``folders`` is a callable returning every folder that may hold a job record;
        ``command`` what a job's arguments follow (default ``python -m tunesmith``)."""
        self.folders = folders
        self.limit = limit
        self.command = command or [sys.executable, "-m", "tunesmith"]
        self.poll_s = poll_s
        self.procs: dict[Path, subprocess.Popen] = {}
        self.lock = threading.RLock()
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None

    # ---- submitting and stopping --------------------------------------------------------
    def submit(self, folder: Path, args: list[str], info: dict | None = None) -> dict:
        """Queue ``tunesmith ARGS`` writing into ``folder``; ``info`` is kept in the record
        (task, method, kind) for the runs list."""
        with self.lock:
            record = {**(info or {}), "args": [str(a) for a in args], "state": "queued",
                      "queued_at": time.time(), "pid": None, "returncode": None}
            RunDir(folder).write_job(record)
        self.tick()
        return record

    def stop(self, folder: Path) -> str:
        """Stop the job writing into ``folder``: a queued one is cancelled, a running one
        gets SIGINT (checkpoint, then exit). Returns what was done."""
        with self.lock:
            run = RunDir(folder)
            record = run.read_job()
            if record.get("state") == "queued":
                run.write_job({**record, "state": "cancelled"})
                return "cancelled"
            if record.get("state") == "running" and process_alive(record.get("pid"), record.get("pid_started")):
                os.kill(record["pid"], signal.SIGINT)
                return "stopping"
        return "not running"

    # ---- the loop ------------------------------------------------------------------------
    def start(self) -> None:
        """Adopt what a previous UI left, then tick in a background thread."""
        self.tick()
        self.thread = threading.Thread(target=self._loop, name="tunesmith-ui-jobs", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stopped.set()
        if self.thread is not None:
            self.thread.join(timeout=5)

    def _loop(self) -> None:
        while not self.stopped.wait(self.poll_s):
            self.tick()

    def tick(self) -> None:
        """Reap finished processes and start queued jobs while there is room."""
        with self.lock:
            queued, running = [], 0
            for folder in self.folders():
                run = RunDir(folder)
                record = run.read_job()
                state = record.get("state")
                if state == "running":
                    if self._still_running(folder, record):
                        running += 1
                    else:
                        run.write_job({**record, "state": "exited", "returncode": self._returncode(folder),
                                       "ended_at": time.time()})
                elif state == "queued":
                    queued.append((record.get("queued_at", 0), folder, record))
            for _, folder, record in sorted(queued, key=lambda item: item[0]):
                if running >= self.limit:
                    break
                self._launch(folder, record)
                running += 1

    def _still_running(self, folder: Path, record: dict) -> bool:
        proc = self.procs.get(folder)
        if proc is not None:
            return proc.poll() is None
        return process_alive(record.get("pid"), record.get("pid_started"))  # started by an earlier UI

    def _returncode(self, folder: Path) -> int | None:
        proc = self.procs.pop(folder, None)
        return proc.returncode if proc is not None else None  # unknown for an adopted process

    def _launch(self, folder: Path, record: dict) -> None:
        run = RunDir(folder)
        folder.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "TUNESMITH_NO_PROGRESS": "1", "PYTHONUNBUFFERED": "1"}
        with open(run.job_log, "ab") as log:
            # A session of its own: Ctrl-C on the UI's terminal does not reach the runs, and a
            # run outlives a UI restart.
            proc = subprocess.Popen([*self.command, *record["args"]], stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                    start_new_session=True)
        self.procs[folder] = proc
        run.write_job({**record, "state": "running", "pid": proc.pid, "pid_started": process_start(proc.pid),
                       "started_at": time.time()})

    def state(self, folder: Path) -> dict:
        """The job record of ``folder`` ({} when the UI never ran anything there)."""
        return RunDir(folder).read_job()
