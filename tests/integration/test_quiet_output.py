"""What a user sees: Tunesmith's own lines, not library noise; --debug shows everything."""

from __future__ import annotations

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
