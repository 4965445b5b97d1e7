"""Checks that fail fast, before any model is loaded: the run directory, disk space, resume target."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from tunesmith.config.methods import method_info
from tunesmith.errors import ConfigError
from tunesmith.rundir import check_run_dir, holds_run_files, mark_run_dir
from tunesmith.train.checkpoint import checkpoint_problem, latest_valid_checkpoint, read_manifest


# The run's length: the only trajectory settings a resume may change (to extend a run).
SCHEDULE_LENGTH = ("epochs", "max_steps")


def config_hash(config) -> str:
    """Hash of what decides the training trajectory (not logging, checkpoint cadence, or the
    run's length, which a resume may extend)."""
    key = {k: config.model_dump(mode="json")[k] for k in ("task", "seed", "model", "data", "method")}
    key["train"] = config.train.model_dump(
        mode="json", include={"batch_size", "grad_accum", "lr", "weight_decay",
                              "warmup_ratio", "scheduler", "max_grad_norm", "precision", "group_by_length"})
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def prepare_run_dir(run_dir: Path, overwrite: bool, resume: str | None) -> None:
    """Create ``run_dir``; refuse to mix two runs' files in one folder; prove it is writable."""
    check_run_dir(run_dir, overwrite, resume)
    if holds_run_files(run_dir) and not resume:
        shutil.rmtree(run_dir)  # --overwrite
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        mark_run_dir(run_dir)
        probe = run_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"The run directory {run_dir} is not writable ({exc.strerror}).", "Choose a writable --output-dir."
        ) from None


def _weights_bytes(model_source: str) -> int | None:
    folder = Path(model_source)
    if not folder.is_dir():
        return None  # a hub id: size unknown until downloaded
    return sum(f.stat().st_size for f in folder.glob("*") if f.suffix in {".safetensors", ".bin"})


def check_disk_space(run_dir: Path, model_source: str, method: str, train_cfg) -> None:
    """Fail before training when the expected checkpoints and final model cannot fit."""
    weights = _weights_bytes(model_source)
    if not weights:
        return
    per_checkpoint = weights * method_info(method).checkpoint_share
    kept = (train_cfg.keep_last_n or 10) + (1 if train_cfg.keep_best else 0) if (train_cfg.save_every or train_cfg.save_every_epoch) else 0
    needed = per_checkpoint * (kept + 1)  # + final/
    free = shutil.disk_usage(run_dir).free
    if free < needed:
        raise ConfigError(
            f"Not enough disk space in {run_dir}: about {needed / 2**20:,.0f} MiB needed for {kept} checkpoints "
            f"and the final model, {free / 2**20:,.0f} MiB free.",
            "Free space, lower train.keep_last_n, save less often, or use a method with smaller checkpoints (lora).",
        )


def schedule_change(run_dir: Path, config) -> dict | None:
    """``{"from": {...}, "to": {...}}`` when ``config`` changes the run's length (epochs,
    max_steps) against the run directory's own config.yaml; None when it does not."""
    import yaml

    previous = run_dir / "config.yaml"
    if not previous.is_file():
        return None
    old = (yaml.safe_load(previous.read_text(encoding="utf-8")) or {}).get("train", {})
    new = config.train.model_dump(mode="json")
    if all(old.get(k, new[k]) == new[k] for k in SCHEDULE_LENGTH):
        return None
    return {"from": {k: old.get(k) for k in SCHEDULE_LENGTH}, "to": {k: new[k] for k in SCHEDULE_LENGTH}}


def find_resume_checkpoint(run_dir: Path, resume: str, expected_hash: str, allow_data_change: bool = False,
                           log=print) -> tuple[Path | None, bool]:
    """The checkpoint to resume from (None: nothing to resume, start fresh), and whether the
    training data changed since it was written (allowed only with ``allow_data_change``).

    ``expected_hash`` is :func:`run_fingerprint`: the settings' hash, ``:``, the data's.

    Raises:
        ConfigError: an explicit checkpoint that is not valid, other settings, or changed data.
    """
    if resume == "auto":
        rejected: list[str] = []
        path = latest_valid_checkpoint(run_dir, rejected)
        for line in rejected:
            log(f"{line}; " + (f"resuming from {path.name}" if path else "no earlier checkpoint"))
        if path is None:
            return None, False
    else:
        path = Path(resume)
        problem = checkpoint_problem(path)
        if problem:
            raise ConfigError(f"{path} is not a valid checkpoint: {problem}.",
                              "Pass --resume auto to pick the latest valid checkpoint.")
    settings, _, data = expected_hash.partition(":")
    stored_settings, _, stored_data = str(read_manifest(path).get("config_hash") or "").partition(":")
    if stored_settings and stored_settings != settings:
        raise ConfigError(
            f"Checkpoint {path} was written by a run with different model/data/method/training settings.",
            "Resume with the run's own config.yaml, or start a new run with --output-dir.",
        )
    changed = bool(stored_data and data and stored_data != data)
    if changed and not allow_data_change:
        raise ConfigError(f"The training data changed since checkpoint {path.name} was written (same files, "
                          "different contents).",
                          "Restore the data, or pass --allow-data-change to continue on the new data (the base "
                          "model is then scored again).")
    return path, changed


def run_fingerprint(config, base_dir: Path | None) -> str:
    """What a checkpoint must match to be resumed: the settings' hash and the data's content hash."""
    from tunesmith.data.cache import data_digest

    return f"{config_hash(config)}:{data_digest(config, base_dir)}"
