"""Crash safety of the real CLI: SIGKILL at random moments, SIGINT/SIGTERM, then --resume auto.

The runs that get killed or signalled are ``python -m tunesmith.cli train`` subprocesses on
the tiny BERT, with every step logged and checkpointed, gradient accumulation, dropout
(BERT's default 0.1, so the RNG restore matters), a ragged last window per epoch and two
epoch boundaries. The resumed runs call the same CLI entry point (``tunesmith.cli.main``,
whose return value is the process exit code) in the test process: each subprocess costs
~8 s of imports here, and the resumes are the bulk of the runs. The reference is a
subprocess too, so a resumed run must reproduce, across processes, the uninterrupted run's
per-step losses and final weights exactly; and a kill must never leave a ``step-*``
checkpoint that resume would pick although it is incomplete.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tunesmith import testing
from tunesmith.cli import main
from tunesmith.jsonl import read_jsonl
from tunesmith.testing import kill, metric_lines, run_log, write_cls_recipe
from tunesmith.train.checkpoint import is_valid_checkpoint, latest_valid_checkpoint, list_checkpoints

TRIALS = 3  # SIGKILL trials per test run
TRIAL_SEED = 20240607
KEEP_LAST_N = 2
# 72 rows / batch 8 = 9 micro-batches = 5 windows of grad_accum 2 (the last one holds a single
# micro-batch), so 3 epochs are 15 optimizer steps with two epoch boundaries.
TRAIN_ROWS, STEPS = 72, 15
ARGS = ["--set", "train.log_every=1", "--set", "train.save_every=1", "--set", f"train.keep_last_n={KEEP_LAST_N}",
        "--set", "train.grad_accum=2", "--set", "train.batch_size=8", "--set", "train.epochs=3",
        "--set", "train.eval_every=7", "--set", "method.type=full", "--set", "train.group_by_length=true"]
TIMEOUT = 300  # seconds any single CLI run may take before the test gives up on it
# The same intra-op thread count in the subprocesses and in this process, so float sums are
# ordered alike and the weights can be compared bit for bit (not part of the config hash).
ARGS += ["--set", f"train.num_threads={torch.get_num_threads()}"]


@pytest.fixture(scope="module")
def recipe(tmp_path_factory, tiny_bert_dir) -> Path:
    """The tiny classification recipe of ``cls_recipe`` (``TRAIN_ROWS`` rows), built once for the module."""
    from transformers import BertConfig

    # The resume has to restore the dropout RNG stream, so dropout must be on.
    assert BertConfig.from_pretrained(tiny_bert_dir).hidden_dropout_prob > 0
    return write_cls_recipe(tmp_path_factory.mktemp("kill-resume"), tiny_bert_dir, train_rows=TRAIN_ROWS)


def _start(recipe: Path, run_dir: Path, *extra: str) -> subprocess.Popen:
    """``tunesmith train`` with this module's settings, in the background (log: RUN_DIR.log)."""
    return testing.start_train(recipe, run_dir, *ARGS, *extra)


class ExitCode(int):
    """An exit code that shows the command's stderr when an assertion on it fails."""

    def __new__(cls, code: int, stderr: str):
        obj = super().__new__(cls, code)
        obj.stderr = stderr
        return obj

    def __repr__(self) -> str:
        return f"{int(self)} (stderr: {self.stderr[-2000:]!r})"


def _resume(recipe: Path, run_dir: Path, *extra: str) -> int:
    """``tunesmith train RECIPE --output-dir RUN --resume auto`` in this process; the exit code."""
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["train", str(recipe), "--output-dir", str(run_dir), *ARGS, "--resume", "auto", *extra])
    sys.stderr.write(err.getvalue())  # still visible to capsys and in the test log
    return ExitCode(code, err.getvalue())


def _wait_for_lines(proc: subprocess.Popen, run_dir: Path, n: int) -> float:
    """Poll until metrics.jsonl has ``n`` lines; return the monotonic time it happened."""
    reached = testing.wait_for_lines(proc, run_dir, n, timeout=TIMEOUT)
    assert reached is not None or proc.poll() is None, (
        f"the run ended (rc {proc.returncode}) before step {n}:\n{run_log(run_dir)[-3000:]}")
    assert reached is not None, f"no step {n} after {TIMEOUT}s"
    return reached


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))


def _checkpoint_problems(run_dir: Path) -> list[str]:
    """``step-*`` directories that are not complete checkpoints, and unexpected strays.

    ``.tmp-step-*`` (half-written) and ``.tmp-delete-*`` (half-deleted: a prune renames a
    checkpoint before removing it) are the only allowed leftovers of a kill; every
    ``step-*`` directory must be a valid checkpoint.
    """
    problems = [p.name for p in list_checkpoints(run_dir) if not is_valid_checkpoint(p)]
    root = run_dir / "checkpoints"
    strays = [p.name for p in root.iterdir()] if root.is_dir() else []
    problems += [n for n in strays if not n.startswith((".tmp-step-", ".tmp-delete-", "step-"))]
    return problems


def _assert_reproduces(run_dir: Path, reference: dict) -> None:
    """A completed run whose metrics, eval lines and final weights equal the reference run's."""
    summary = _summary(run_dir)
    assert summary["status"] == "completed", summary
    assert summary["train"]["steps"] == STEPS
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    assert [m["step"] for m in metrics] == list(range(1, STEPS + 1))
    for got, want in zip(metrics, reference["metrics"]):
        assert got["loss"] == pytest.approx(want["loss"], abs=1e-6), got["step"]
        assert got["lr"] == pytest.approx(want["lr"], abs=1e-12), got["step"]
    evals = read_jsonl(run_dir / "eval.jsonl")
    assert [e["step"] for e in evals] == [e["step"] for e in reference["evals"]]
    for got, want in zip(evals, reference["evals"]):
        assert got["eval_loss"] == pytest.approx(want["eval_loss"], abs=1e-6)
    weights = load_file(run_dir / "final" / "model.safetensors")
    assert weights.keys() == reference["weights"].keys()
    for name, tensor in reference["weights"].items():
        assert torch.equal(weights[name], tensor), name
    assert not list((run_dir / "checkpoints").glob(".tmp-step-*")), "a resume removes stale temp checkpoints"


@pytest.fixture(scope="module")
def reference(recipe, tmp_path_factory) -> dict:
    """One uninterrupted run, and how long its training phase lasts in wall-clock time."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    proc = _start(recipe, run_dir)
    first = _wait_for_lines(proc, run_dir, 1)
    last = _wait_for_lines(proc, run_dir, STEPS)
    assert testing.finish(proc, TIMEOUT) == 0, run_log(run_dir)[-3000:]
    assert _summary(run_dir)["status"] == "completed"
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    assert [m["step"] for m in metrics] == list(range(1, STEPS + 1))
    # The epoch boundaries are where we think: after steps 5 and 10.
    assert [m["epoch"] for m in metrics[4:11:5]] == [1.0, 2.0] and metrics[5]["epoch"] == 1.2
    return {
        "metrics": metrics,
        "evals": read_jsonl(run_dir / "eval.jsonl"),
        "weights": load_file(run_dir / "final" / "model.safetensors"),
        "train_span_s": last - first,  # from step 1 logged to step STEPS logged
        "run_dir": run_dir,
    }


def test_sigkill_at_random_points_then_resume_reproduces_the_run(recipe, reference, tmp_path):
    rng = random.Random(TRIAL_SEED)
    span = reference["train_span_s"]
    for trial in range(TRIALS):
        # Spread the kills over the training phase (a checkpoint is written after every step,
        # so several land inside save_checkpoint); a little past it reaches the final eval/save.
        delay = rng.uniform(0.0, 1.1 * span)
        run_dir = tmp_path / f"trial-{trial}"
        proc = _start(recipe, run_dir)
        _wait_for_lines(proc, run_dir, 1)
        time.sleep(delay)
        rc = kill(proc, signal.SIGKILL, TIMEOUT)
        temps = [p.name for p in (run_dir / "checkpoints").glob(".tmp-step-*")]
        newest = latest_valid_checkpoint(run_dir)
        where = (f"trial {trial}: delay {delay:.2f}s of {span:.2f}s, rc {rc}, {metric_lines(run_dir)} steps logged, "
                 f"newest valid checkpoint {newest and newest.name}, half-written {temps}")
        print(where)
        assert rc in (-signal.SIGKILL, 0), where  # 0: the run had already finished
        assert _checkpoint_problems(run_dir) == [], where
        if rc == -signal.SIGKILL:
            assert newest is None or int(newest.name[5:]) <= metric_lines(run_dir), where

        assert _resume(recipe, run_dir) == 0, where
        _assert_reproduces(run_dir, reference)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_sigint_saves_a_checkpoint_and_marks_the_run_interrupted(recipe, reference, tmp_path, sig):
    run_dir = tmp_path / "run"
    proc = _start(recipe, run_dir)
    _wait_for_lines(proc, run_dir, 2)
    assert kill(proc, sig, TIMEOUT) == 130, run_log(run_dir)[-3000:]

    summary = _summary(run_dir)
    assert summary["status"] == "interrupted"
    step = summary["interrupted_at_step"]
    assert 2 <= step < STEPS
    checkpoint = run_dir / "checkpoints" / f"step-{step}"
    assert Path(summary["checkpoint"]) == checkpoint and is_valid_checkpoint(checkpoint)
    assert latest_valid_checkpoint(run_dir) == checkpoint
    assert [m["step"] for m in read_jsonl(run_dir / "metrics.jsonl")] == list(range(1, step + 1))
    assert not list((run_dir / "checkpoints").glob(".tmp-step-*"))
    assert not (run_dir / "final").exists()
    assert f"interrupted at step {step}" in run_log(run_dir)

    assert _resume(recipe, run_dir) == 0
    _assert_reproduces(run_dir, reference)


def _interrupted_copy(reference: dict, run_dir: Path, step: int) -> None:
    """The reference run as a crash at ``step`` would have left it."""
    shutil.copytree(reference["run_dir"], run_dir)
    shutil.rmtree(run_dir / "final")
    (run_dir / "summary.json").unlink()
    for ckpt in list_checkpoints(run_dir):
        if int(ckpt.name[5:]) > step:
            shutil.rmtree(ckpt)


def test_resume_with_changed_settings_is_refused(recipe, reference, tmp_path, capsys):
    run_dir = tmp_path / "run"
    # The reference keeps the last two checkpoints, step-14 and step-15: a crash after step 14.
    _interrupted_copy(reference, run_dir, STEPS - 1)
    before = sorted((p.relative_to(run_dir), p.stat().st_mtime_ns) for p in run_dir.rglob("*"))
    assert _resume(recipe, run_dir, "--set", "train.lr=0.5") == 2
    err = capsys.readouterr().err
    assert "different model/data/method/training settings" in err
    assert before == sorted((p.relative_to(run_dir), p.stat().st_mtime_ns) for p in run_dir.rglob("*"))
    # Changing only the checkpoint cadence is not a different run: that resume is allowed.
    assert _resume(recipe, run_dir, "--set", "train.save_every=3") == 0
    _assert_reproduces(run_dir, reference)


def test_existing_run_dir_without_resume_or_overwrite_fails_fast(recipe, reference, capsys, monkeypatch):
    import tunesmith.features as features  # the library import is not what "fast" is about
    import tunesmith.runner as runner

    def must_not_run(*args, **kwargs):
        raise AssertionError("the run directory check must come before data and model loading")

    monkeypatch.setattr(features, "prepare_data", must_not_run)
    monkeypatch.setattr(runner, "load_model", must_not_run)
    run_dir = reference["run_dir"]
    before = sorted((p.relative_to(run_dir), p.stat().st_mtime_ns) for p in run_dir.rglob("*"))
    started = time.perf_counter()
    code = main(["train", str(recipe), "--output-dir", str(run_dir), *ARGS])
    elapsed = time.perf_counter() - started
    assert code == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--resume" in err and "--overwrite" in err
    assert elapsed < 5, f"refusing took {elapsed:.1f}s: it must come before the model and data load"
    assert before == sorted((p.relative_to(run_dir), p.stat().st_mtime_ns) for p in run_dir.rglob("*"))
