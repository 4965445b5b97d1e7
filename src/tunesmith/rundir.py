"""The run directory: the one reader and writer of what a run leaves behind.

``runs/<name>/`` holds ``config.yaml``, ``summary.json``, the logbook files
(``metrics.jsonl``, ``eval.jsonl``, ``events.jsonl``), ``eval_before.json``,
``eval_set.jsonl`` / ``test_set.jsonl`` (the held-out rows exports re-measure on),
``predictions.jsonl``, ``probes.json``, ``rejects.jsonl``, ``checkpoints/`` and
``final/``. A model folder (``final/``, a merged or ONNX export) carries
``tunesmith.json``: task, method, base model, labels, template facts. Every module that
reads or writes these files goes through here, so their names and shapes live in one
place. In a multi-process run only the main process writes (``is_main``).
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path

from tunesmith.errors import ConfigError, ModelError
from tunesmith.jsonl import read_jsonl, write_jsonl
from tunesmith.storage import atomic_write_text, sha256_file

MODEL_META = "tunesmith.json"
SUMMARY = "summary.json"
LOGBOOK_FILES = ("metrics.jsonl", "eval.jsonl", "events.jsonl")
# What experiment trackers store of a finished run (train/tracking.py), and where a run
# keeps its tracker run id (so a resumed run continues it).
TRACKED_ARTIFACTS = ("report.html", SUMMARY, "config.yaml")
TRACKING = "tracking.json"
# What the web UI keeps of a run it launched (the command, its pid, queued/running/exited),
# so a restarted UI rebuilds its queue from the run directories alone.
UI_JOB = "ui-job.json"
UI_LOG = "ui-job.log"
# Written into every run directory Tunesmith creates: --overwrite deletes only such folders.
RUN_MARKER = ".tunesmith-run"


def _write_json(path: Path, data) -> None:
    # Atomic: a run killed while writing summary.json or tunesmith.json leaves the previous
    # complete file, never half of one.
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False))


# Files of a model folder that are not the model: its card (rewritten after the run ends), an
# export's report, the web UI's job record.
UNHASHED = (MODEL_META, "README.md", "export.json", UI_JOB, UI_LOG)


def write_model_meta(folder: Path, meta: dict) -> None:
    """Write ``tunesmith.json`` into a model folder (final/ or an export), written last: it
    records the sha256 of every other file (``files``) and of its own fields (``meta_sha256``),
    which :func:`verify_model_folder` checks before the model is used again."""
    folder = Path(folder)
    files = {str(p.relative_to(folder)): sha256_file(p) for p in sorted(folder.rglob("*"))
             if p.is_file() and str(p.relative_to(folder)) not in UNHASHED}
    body = {k: v for k, v in meta.items() if k not in ("files", "meta_sha256")} | {"files": files}
    _write_json(folder / MODEL_META, body | {"meta_sha256": _meta_digest(body)})


def _meta_digest(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def verify_model_folder(folder: Path) -> None:
    """Check a model folder against the hashes its ``tunesmith.json`` recorded when it was
    written (folders from before hashes were recorded pass unchecked).

    Raises:
        ModelError: naming each file whose content changed, that is missing or was added,
            or the metadata itself when its fields were edited.
    """
    folder = Path(folder)
    meta = read_model_meta(folder)
    if "files" not in meta:
        return
    problems = []
    body = {k: v for k, v in meta.items() if k != "meta_sha256"}
    if meta.get("meta_sha256") != _meta_digest(body):
        problems.append(f"{MODEL_META}: its fields were edited after it was written")
    recorded = meta["files"] if isinstance(meta["files"], dict) else {}
    present = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()} - set(UNHASHED)
    for name in sorted(recorded):
        if name not in present:
            problems.append(f"{name}: missing")
        elif sha256_file(folder / name) != recorded[name]:
            problems.append(f"{name}: content changed since it was written (sha256 {recorded[name][:12]}... "
                            f"recorded, {sha256_file(folder / name)[:12]}... now)")
    problems += [f"{name}: added after the model was written" for name in sorted(present - set(recorded))]
    if problems:
        raise ModelError(f"{folder} is not the model Tunesmith wrote:\n  - " + "\n  - ".join(problems),
                         "Use the run's own files (train again, or restore them); Tunesmith does not load a "
                         "model whose files were changed.")


def has_model_meta(folder: Path) -> bool:
    return (Path(folder) / MODEL_META).is_file()


def read_model_meta(folder: Path) -> dict:
    """The ``tunesmith.json`` of a model folder.

    Raises:
        ModelError: the folder holds none, so it is not a Tunesmith model.
    """
    path = Path(folder) / MODEL_META
    if not path.is_file():
        raise ModelError(f"{folder} has no {MODEL_META}, so it is not a Tunesmith final model.",
                         "Point to a run's final/ folder.")
    return json.loads(path.read_text(encoding="utf-8"))


def resolve_final_dir(path: str | Path) -> tuple[Path, Path | None]:
    """Accept a run directory or its ``final/`` folder; return ``(final_dir, run_dir or None)``.

    Raises:
        ConfigError: neither the folder nor its ``final/`` holds a Tunesmith model.
    """
    path = Path(path)
    if has_model_meta(path / "final"):
        return path / "final", path
    if has_model_meta(path):
        run_dir = path.parent if (path.parent / SUMMARY).is_file() else None
        return path, run_dir
    raise ConfigError(
        f"{path} is neither a run directory with final/{MODEL_META} nor a final/ folder.",
        "Point to the folder 'tunesmith train' wrote (runs/<name>), or to its final/ subfolder.",
    )


def resolve_run_dir(config, output_dir: str | Path | None) -> Path:
    """The run directory of a recipe: ``--output-dir``, or ``<output_dir>/<name>``."""
    return Path(output_dir) if output_dir else Path(config.output_dir) / config.name


def holds_run_files(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds anything besides the web UI's job record and log (which the
    UI writes before the run it queued starts)."""
    return run_dir.is_dir() and any(p.name not in (UI_JOB, UI_LOG) for p in run_dir.iterdir())


def check_run_dir(run_dir: Path, overwrite: bool, resume: str | None) -> None:
    """Refuse to mix two runs' files in one folder (changes nothing; torch-free, so the CLI
    says it in a second, before any model library loads).

    Raises:
        ConfigError: ``run_dir`` holds files and neither ``resume`` nor ``overwrite`` is set.
    """
    if holds_run_files(run_dir) and not resume and not overwrite:
        raise ConfigError(
            f"The run directory {run_dir} already exists and is not empty.",
            "Pass --resume to continue it, --overwrite to replace it, or choose another with "
            "--output-dir or --set name=...",
        )
    if overwrite and not resume and holds_run_files(run_dir) and not is_run_dir(run_dir):
        raise ConfigError(
            f"--overwrite would delete {run_dir}, which is not a run directory Tunesmith made "
            f"(it has no {RUN_MARKER} or {SUMMARY}).",
            "Choose an empty or new --output-dir; Tunesmith never deletes folders it did not create.")


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` is a folder Tunesmith created for a run (its marker, or an older run's summary)."""
    return (path / RUN_MARKER).is_file() or (path / SUMMARY).is_file()


def mark_run_dir(path: Path) -> None:
    """Mark ``path`` as a run directory Tunesmith created (what --overwrite checks); a marked
    folder is left untouched (a refused resume changes nothing)."""
    if not (path / RUN_MARKER).is_file():
        (path / RUN_MARKER).write_text("tunesmith run directory\n", encoding="utf-8")


@contextmanager
def lock_run_dir(run_dir: Path, enabled: bool = True):
    """Hold ``run_dir`` for this process while a run writes it: a second ``tunesmith`` run
    into the same folder fails at once, naming the holder's pid. The lock file lives beside
    the folder (``.<name>.lock``), so --overwrite can replace the folder while holding it.

    Raises:
        ConfigError: another process holds the folder.
    """
    if not enabled:
        yield
        return
    from filelock import FileLock, Timeout

    run_dir = Path(run_dir)
    lock = FileLock(str(run_dir.parent / f".{run_dir.name}.lock"))
    holder = run_dir.parent / f".{run_dir.name}.lock.pid"
    try:
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire(timeout=0)
    except Timeout:
        pid = holder.read_text().strip() if holder.is_file() else "unknown"
        raise ConfigError(f"The run directory {run_dir} is in use by another tunesmith process (pid {pid}).",
                          "Wait for it to finish or stop it, or train into another --output-dir.") from None
    except OSError as exc:
        raise ConfigError(f"The run directory {run_dir} is not writable ({exc.strerror or exc}).",
                          "Choose a writable --output-dir.") from None
    try:
        holder.write_text(str(os.getpid()))
        yield
    finally:
        holder.unlink(missing_ok=True)
        lock.release()


class RunDir:
    """Reads and writes the files of one run directory (writes only where ``is_main``)."""

    def __init__(self, path: str | Path, is_main: bool = True):
        self.path = Path(path)
        self.is_main = is_main

    @property
    def final(self) -> Path:
        return self.path / "final"

    # ---- summary and logs ---------------------------------------------------------------
    def write_summary(self, summary: dict) -> None:
        if self.is_main:
            _write_json(self.path / SUMMARY, summary)

    def read_summary(self) -> dict:
        """summary.json, or {} when the run never wrote one."""
        path = self.path / SUMMARY
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    def log(self, name: str) -> list[dict]:
        """The lines of a logbook file (``metrics``, ``eval`` or ``events``)."""
        return read_jsonl(self.path / f"{name}.jsonl")

    def forget_progress(self) -> None:
        """Delete the logs and the base model's scores (a resume that found no checkpoint starts over)."""
        if self.is_main:
            for name in (*LOGBOOK_FILES, "eval_before.json"):
                (self.path / name).unlink(missing_ok=True)

    # ---- evaluation -------------------------------------------------------------------------
    def save_eval_before(self, metrics: dict, probes: list) -> None:
        """The base model's scores, kept so a resumed run reuses them."""
        if self.is_main:
            (self.path / "eval_before.json").write_text(
                json.dumps({"metrics": metrics, "probes": probes}, ensure_ascii=False), encoding="utf-8")

    def eval_before(self) -> tuple[dict, list] | None:
        """The saved base-model scores, or None when there are none or the file is torn or
        malformed (the base model is then measured again)."""
        path = self.path / "eval_before.json"
        if not path.is_file():
            return None
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            return dict(saved["metrics"]), list(saved["probes"])
        except (ValueError, KeyError, TypeError):
            return None

    def forget_eval_before(self) -> None:
        """Delete the base model's saved scores (the data they were measured on changed)."""
        if self.is_main:
            (self.path / "eval_before.json").unlink(missing_ok=True)

    def write_probes(self, probes: list[dict]) -> None:
        if self.is_main:
            _write_json(self.path / "probes.json", probes)

    def probe_inputs(self) -> list[str]:
        """The probe prompts the run answered before and after training ([] when none)."""
        path = self.path / "probes.json"
        return [p["input"] for p in json.loads(path.read_text(encoding="utf-8"))] if path.is_file() else []

    def write_predictions(self, rows: list[dict], labels: list[str], probs: list[list[float]]) -> None:
        """One line per eval example (text, gold, predicted, probabilities) for error analysis and review."""
        if not self.is_main:
            return
        lines = []
        for row, p in zip(rows, probs):
            predicted = labels[max(range(len(p)), key=p.__getitem__)]
            pair = {"text_pair": row["text_pair"]} if "text_pair" in row else {}
            lines.append({"text": row["text"], **pair, "label": row["label"], "predicted": predicted,
                          "probs": dict(zip(labels, p))})
        write_jsonl(self.path / "predictions.jsonl", lines)

    def predictions(self) -> list[dict]:
        """predictions.jsonl: per eval example the trained model's output (and, for chat
        runs, the base model's answer as ``prediction_before``); [] when the run has none."""
        return read_jsonl(self.path / "predictions.jsonl")

    def write_generations(self, rows: list[dict]) -> None:
        """A chat run's predictions.jsonl: per held-out prompt the reference, the trained and the
        base model's answers and their scores (see eval/chat_eval.py)."""
        if self.is_main and rows:
            write_jsonl(self.path / "predictions.jsonl", rows)

    # ---- data -------------------------------------------------------------------------------
    def write_rows(self, name: str, rows: list[dict]) -> None:
        """``eval_set`` (what exports re-measure on and reviewers read), ``test_set`` (never
        trained or selected on), ``rejects`` (invalid rows with their reasons) or
        ``rewards`` (a reward model's rewards of each held-out pair, before and after)."""
        if self.is_main:
            write_jsonl(self.path / f"{name}.jsonl", rows, drop_private=True)

    @property
    def eval_set(self) -> Path:
        """The held-out rows file (``eval_set.jsonl``); it may not exist."""
        return self.path / "eval_set.jsonl"

    # ---- the web UI's job record -----------------------------------------------------------
    def write_job(self, job: dict) -> None:
        """The UI's record of the process it runs (or queued) in this directory."""
        self.path.mkdir(parents=True, exist_ok=True)
        _write_json(self.path / UI_JOB, job)

    def read_job(self) -> dict:
        """The UI's job record, or {} when the UI never ran this directory (or the file is torn)."""
        path = self.path / UI_JOB
        try:
            return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        except ValueError:
            return {}

    @property
    def job_log(self) -> Path:
        """Where the UI sends a job's output (stdout and stderr)."""
        return self.path / UI_LOG

    def is_run(self) -> bool:
        """Whether the folder is a run directory (it has a summary.json)."""
        return (self.path / SUMMARY).is_file()

    def eval_rows(self) -> list[dict]:
        """The run's held-out rows (``eval_set.jsonl``), or [] when the run has none."""
        return read_jsonl(self.path / "eval_set.jsonl")


def write_eval_output(out: Path, metrics: dict, predictions: list[dict], rejects: list[dict]) -> None:
    """The files of ``tunesmith eval``: ``metrics.json``, ``predictions.jsonl`` (one line per
    item, with per-example scores) and, when rows were left out, ``rejects.jsonl``."""
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / "metrics.json", metrics)
    write_jsonl(out / "predictions.jsonl", predictions)
    if rejects:
        write_jsonl(out / "rejects.jsonl", rejects)
