"""What a user sees: Tunesmith's own lines, not library noise; --debug shows everything."""

from __future__ import annotations

import json
import os
import subprocess
import sys

NOISE = ("LOAD REPORT", "MISSING", "Loading weights", "is_gradient_checkpointing", "_check_is_size", "\x1b[")


def _train(recipe, *extra):
    env = {k: v for k, v in os.environ.items() if k != "TUNESMITH_DEBUG"}
    return subprocess.run([sys.executable, "-m", "tunesmith.cli", *extra[:1], "train", str(recipe), "--no-progress",
                           "--overwrite", "--set", "train.max_steps=2", *extra[1:]],
                          capture_output=True, text=True, env=env, timeout=300)


def test_a_classification_run_says_new_head_and_prints_no_library_noise(cls_recipe):
    run = _train(cls_recipe)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "new classification head: 2 labels" in run.stdout
    assert [n for n in NOISE if n in run.stdout + run.stderr] == []
    debug = _train(cls_recipe, "--debug")
    assert debug.returncode == 0 and "LOAD REPORT" in debug.stdout + debug.stderr


def test_a_lora_chat_run_prints_no_peft_deprecation_noise(chat_recipe):
    run = _train(chat_recipe)
    assert run.returncode == 0, run.stderr[-2000:]
    assert [n for n in NOISE if n in run.stdout + run.stderr] == []


def _cli(recipe, *args):
    env = {k: v for k, v in os.environ.items() if k not in ("TUNESMITH_DEBUG", "TUNESMITH_NO_PROGRESS")}
    return subprocess.run([sys.executable, "-m", "tunesmith.cli", "train", str(recipe), "--overwrite",
                           "--set", "train.max_steps=4", "--set", "train.log_every=1", "--set", "train.eval_every=2",
                           *args], capture_output=True, text=True, env=env, timeout=300)


def test_outside_a_terminal_progress_is_plain_lines_and_json_or_quiet_keep_stdout_clean(cls_recipe):
    run = _cli(cls_recipe)  # stdout and stderr are pipes here, as in `tunesmith train ... | tee log`
    assert run.returncode == 0, run.stderr[-2000:]
    steps = [line for line in run.stdout.splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in steps] == ["1/4", "2/4", "3/4", "4/4"]
    assert all(" loss " in line and " lr " in line and " tokens/s " in line and " eta " in line for line in steps)
    assert "eval at step 2: accuracy " in run.stdout
    assert "\r" not in run.stdout + run.stderr  # no bar redraws in a log file

    as_json = _cli(cls_recipe, "--json")
    summary = json.loads(as_json.stdout)
    assert summary["status"] == "completed" and summary["train"]["steps"] == 4
    assert "step 1/4" not in as_json.stdout + as_json.stderr and "data:" in as_json.stderr

    quiet = _cli(cls_recipe, "--quiet")
    assert quiet.returncode == 0 and "data:" not in quiet.stdout and "step 1/4" not in quiet.stdout
    assert "== tiny-cls: completed" in quiet.stdout
