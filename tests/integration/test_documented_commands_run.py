"""Run the documented commands (README code blocks and --help epilogs) for real, on a
reduced budget: a few steps on a few rows. Slow (minutes); the fast check that every one
parses and validates is tests/unit/test_documented_commands.py.

Not run here: `serve` and `ui` (servers that run until stopped; test_serve.py and test_ui_browser.py
drive them) and `curl`, and commands naming a user's own file that the repository does not
have (`my-recipe.yaml`, `my_chats.jsonl`).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.unit.test_documented_commands import DOCUMENTED, REPO

REDUCED = ["--set", "data.max_train_samples=32", "--set", "data.max_eval_samples=16"]


def _reduced(argv: list[str]) -> list[str] | None:
    """The command with a small budget, or None when it is not run here."""
    if argv[0] in ("serve", "ui") or "--help" in argv or any("*" in a for a in argv):
        return None  # a server, help, or a shell glob over a reviewer's files
    files = [a for a in argv if a.endswith((".yaml", ".jsonl")) and not a.startswith(("runs/", "configs/"))]
    if argv[0] != "recipe" and files:
        return None
    if argv[0] in ("train", "demo"):
        return [*argv, *REDUCED, "--set", "train.max_steps=2", "--overwrite", "--no-progress"]
    if argv[0] == "compare":
        steps = [] if "--steps" in argv else ["--steps", "2"]
        argv = [a if not (i and argv[i - 1] == "--steps") else "2" for i, a in enumerate(argv)]
        return [*argv, *steps, *REDUCED, "--no-progress"]
    if argv[0] == "data":
        return [*argv, *REDUCED]
    if argv[0] == "export" and "pruned" in argv:
        # A two-step run's metric means nothing, so the pruning gate is opened; recovery is cut
        # to two steps (argparse keeps the last value of a repeated option).
        return [*argv, "--max-drop", "100", *(["--recover-steps", "2"] if "--recover-steps" in argv else [])]
    return argv


@pytest.mark.slow
def test_documented_commands_run(tmp_path):
    (tmp_path / "configs").symlink_to(REPO / "configs")
    env = {**os.environ, "TUNESMITH_NO_PROGRESS": "1"}
    # Commands that read runs/demo (export, repeating a run) need the demo first.
    # Each distinct command once (an epilog shared by subcommands, or a README line repeating
    # one, would otherwise run into its own output: "already exists").
    distinct = list(dict.fromkeys(tuple(a) for a in DOCUMENTED))
    # Commands that read a run (eval, export, review) after those that train it.
    ordered = sorted(map(list, distinct), key=lambda a: ("runs/demo" in " ".join(a) or a[0] == "eval",
                                                        a[0] == "export", "review-" in " ".join(a)))
    failures, ran = [], 0
    for argv in ordered:
        reduced = _reduced(argv)
        if reduced is None:
            continue
        proc = subprocess.run([sys.executable, "-m", "tunesmith.cli", *reduced], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=1800)
        ran += 1
        if proc.returncode != 0:
            failures.append(f"tunesmith {' '.join(reduced)}\n{proc.stderr[-1500:]}")
    assert ran >= 20 and failures == [], "\n\n".join(failures)
