"""A bad recipe or a taken run directory is reported before torch, transformers or peft load
(benchmarks/fast_errors.py times it; no timing is asserted here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

DEMO = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"
HEAVY = ("torch", "transformers", "peft")


def _cli(tmp_path: Path, *args: str) -> dict:
    code = ("import json, sys\nfrom tunesmith.cli import main\n"
            f"rc = main({list(args)!r})\n"
            f"print(json.dumps({{'rc': rc, 'loaded': [m for m in {HEAVY!r} if m in sys.modules]}}))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]), stderr=proc.stderr)


def test_a_typo_is_reported_without_loading_torch(tmp_path):
    result = _cli(tmp_path, "train", str(DEMO), "--set", "train.lrr=1")
    assert result["rc"] == 2 and result["loaded"] == []
    assert "unknown key 'train.lrr'. Did you mean 'train.lr'?" in result["stderr"]


def test_a_taken_run_directory_is_reported_without_loading_torch(tmp_path):
    (tmp_path / "runs" / "demo").mkdir(parents=True)
    (tmp_path / "runs" / "demo" / "summary.json").write_text("{}")
    result = _cli(tmp_path, "train", str(DEMO))
    assert result["rc"] == 2 and result["loaded"] == []
    assert "already exists and is not empty" in result["stderr"]


def test_debug_lasts_for_one_command_only(monkeypatch, capsys):
    """An in-process caller (a test, a notebook) is not left in debug mode by --debug."""
    import os

    from tunesmith.cli import main

    monkeypatch.delenv("TUNESMITH_DEBUG", raising=False)
    seen = []
    monkeypatch.setattr("tunesmith.cli._run_command", lambda args: seen.append(os.environ.get("TUNESMITH_DEBUG")) or 0)
    assert main(["--debug", "recipe", "fields", "train.guard"]) == 0
    assert seen == ["1"]  # on while the command ran
    assert "TUNESMITH_DEBUG" not in os.environ  # and gone afterwards
    monkeypatch.setenv("TUNESMITH_DEBUG", "0")
    assert main(["--debug", "recipe", "fields", "train.guard"]) == 0
    assert os.environ["TUNESMITH_DEBUG"] == "0"  # a setting made before is restored
