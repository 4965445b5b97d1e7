"""SIGKILL a real `tunesmith train` at random moments, resume it, and check it reproduces the run.

Builds a tiny 2-layer BERT (hidden 32, the packaged MiniLM tokenizer, dropout 0.1) and a
synthetic sentiment data set, runs one uninterrupted reference, then for each trial starts
``python -m tunesmith.cli train`` in a fresh run directory, waits for the first metrics line,
sleeps a random delay within the reference's training phase, sends SIGKILL and runs the same
command again with ``--resume auto`` (also a subprocess). Every step is logged and
checkpointed, with gradient accumulation, several epochs and ``keep_last_n=2``, so many kills
land inside a checkpoint write or a prune.

Usage: python benchmarks/kill_resume_trials.py [--trials 20] [--seed 0] [--work-dir DIR]

Prints one JSON line per trial and a final summary line:
- delay_s: seconds between the first metrics line and the kill
- steps_logged: metrics lines when the kill landed (the step reached)
- during_checkpoint_write: a ``.tmp-step-*`` dir was left, i.e. the kill hit save_checkpoint
- finished_before_kill: the run had already exited 0 when the kill was sent
- invalid_step_dirs: ``step-*`` dirs failing validation after the kill (a prune cut short)
- resumed_from / resumed_from_valid: the checkpoint the resume announced, and whether it was
  valid before the resume (False would be a corrupt checkpoint used)
- resume_exit_code, losses_equal (every step 1..N once, |diff| <= 1e-6), weights_equal (bitwise)
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from tunesmith.jsonl import read_jsonl
from tunesmith.testing import (
    finish,
    kill,
    metric_lines,
    run_log,
    start_train,
    wait_for_lines,
    write_cls_recipe,
    write_tiny_bert,
)
from tunesmith.train.checkpoint import is_valid_checkpoint, list_checkpoints

TRAIN_ARGS = ["--set", "train.log_every=1", "--set", "train.save_every=1", "--set", "train.keep_last_n=2",
              "--set", "train.grad_accum=2", "--set", "train.batch_size=8", "--set", "train.epochs=3",
              "--set", "train.eval_every=7", "--set", "method.type=full", "--set", "train.group_by_length=true"]
TIMEOUT = 600


def build_setup(work: Path, train_rows: int) -> Path:
    """The tests' tiny BERT, train/eval data and recipe in ``work``; returns the recipe path."""
    from transformers import BertConfig

    model_dir = write_tiny_bert(work / "tiny-bert")
    assert BertConfig.from_pretrained(model_dir).hidden_dropout_prob > 0  # the resume must restore the dropout RNG
    return write_cls_recipe(work, model_dir, train_rows)


def start(recipe: Path, run_dir: Path, *extra: str):
    """``tunesmith train`` with the trial settings, in the background (log: RUN_DIR.log)."""
    return start_train(recipe, run_dir, *TRAIN_ARGS, *extra)


def compare(run_dir: Path, ref: dict) -> dict:
    out = {"losses_equal": False, "weights_equal": False, "max_loss_diff": None, "max_weight_diff": None}
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    steps = [m["step"] for m in metrics]
    if steps == [m["step"] for m in ref["metrics"]]:
        diff = max(abs(a["loss"] - b["loss"]) for a, b in zip(metrics, ref["metrics"]))
        out.update(max_loss_diff=diff, losses_equal=diff <= 1e-6)
    else:
        out["steps_logged_after_resume"] = steps
    final = run_dir / "final" / "model.safetensors"
    if final.is_file():
        weights = load_file(final)
        if weights.keys() == ref["weights"].keys():
            diff = max(float((weights[k] - v).abs().max()) for k, v in ref["weights"].items())
            out.update(max_weight_diff=diff,
                       weights_equal=all(torch.equal(weights[k], v) for k, v in ref["weights"].items()))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-rows", type=int, default=72, help="72 rows = 5 steps per epoch, 15 steps")
    parser.add_argument("--work-dir", help="where to build the model and runs (default: a temp dir, removed)")
    args = parser.parse_args()

    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="kill-resume-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        recipe = build_setup(work, args.train_rows)

        ref_dir = work / "reference"
        proc = start(recipe, ref_dir)
        first = wait_for_lines(proc, ref_dir, 1, TIMEOUT)
        last, seen = first, 1
        while proc.poll() is None:  # the training phase ends when the last metrics line appears
            lines = metric_lines(ref_dir)
            if lines > seen:
                last, seen = time.monotonic(), lines
            time.sleep(0.005)
        rc = finish(proc, TIMEOUT)
        if rc != 0 or first is None:
            sys.exit(f"reference run failed (rc {rc}); see {ref_dir}.log")
        ref_metrics = read_jsonl(ref_dir / "metrics.jsonl")
        span = last - first
        ref = {"metrics": ref_metrics, "weights": load_file(ref_dir / "final" / "model.safetensors")}
        print(json.dumps({"reference_steps": len(ref_metrics), "train_span_s": round(span, 3)}), flush=True)

        rng = random.Random(args.seed)
        results = []
        for trial in range(args.trials):
            delay = rng.uniform(0.0, 1.1 * span)
            run_dir = work / f"trial-{trial}"
            proc = start(recipe, run_dir)
            t0 = wait_for_lines(proc, run_dir, 1, TIMEOUT)
            if t0 is not None:
                time.sleep(max(0.0, delay - (time.monotonic() - t0)))
            finished_before = proc.poll() == 0
            kill_rc = kill(proc, signal.SIGKILL, TIMEOUT)

            ckpts = list_checkpoints(run_dir)
            valid = {p.name: is_valid_checkpoint(p) for p in ckpts}
            temps = sorted(p.name for p in (run_dir / "checkpoints").glob(".tmp-step-*"))
            record = {
                "trial": trial, "delay_s": round(delay, 3), "kill_rc": kill_rc,
                "steps_logged": metric_lines(run_dir),
                "finished_before_kill": finished_before,
                "during_checkpoint_write": bool(temps),
                "checkpoints": [p.name for p in ckpts],
                "invalid_step_dirs": [name for name, ok in valid.items() if not ok],
            }

            resume = start(recipe, run_dir, "--resume", "auto")
            record["resume_exit_code"] = finish(resume, TIMEOUT)
            found = re.findall(r"resuming from (\S+)", run_log(run_dir))
            resumed_from = Path(found[-1]).name if found else None
            record["resumed_from"] = resumed_from
            record["resumed_from_valid"] = valid.get(resumed_from) if resumed_from else None
            summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").is_file() else {}
            record["resume_status"] = summary.get("status")
            record.update(compare(run_dir, ref))
            results.append(record)
            print(json.dumps(record), flush=True)

        print(json.dumps({
            "trials": len(results),
            "reproduced_exactly": sum(r["resume_exit_code"] == 0 and r["losses_equal"] and r["weights_equal"]
                                      for r in results),
            "corrupt_checkpoints_used": sum(r["resumed_from_valid"] is False for r in results),
            "resume_failures": sum(r["resume_exit_code"] != 0 for r in results),
            "kills_during_checkpoint_write": sum(r["during_checkpoint_write"] for r in results),
            "kills_after_completion": sum(r["finished_before_kill"] for r in results),
            "kills_before_first_checkpoint": sum(r["resumed_from"] is None for r in results),
            "trials_with_invalid_step_dirs": sum(bool(r["invalid_step_dirs"]) for r in results),
            "train_span_s": round(span, 3),
            "wall_s": round(time.monotonic() - started, 1),
        }), flush=True)
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
