"""The shipped demo recipe, on the real packaged model and data.

The default suite runs it on a reduced budget; `-m slow` runs the full demo and checks
the promised accuracy.
"""

from __future__ import annotations

import json

import pytest

from tunesmith.cli import main


def test_demo_recipe_on_a_reduced_budget(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--output-dir", str(out), "--set", "data.max_train_samples=2048", "--set", "data.eval_size=200",
            "--set", "train.epochs=1", "--set", "train.eval_every=32", "--set", "train.save_every=64",
            "--set", "train.lr=2e-3"]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["method"] == "lora"
    assert 0.35 < summary["eval_before"]["accuracy"] < 0.65  # an untrained head is a coin flip
    assert summary["eval_after"]["accuracy"] > summary["eval_before"]["accuracy"] + 0.1
    assert (out / "final" / "adapter_model.safetensors").is_file()
    printed = capsys.readouterr().out
    assert "This is not worth watching even once." in printed and "before" in printed


@pytest.mark.slow
def test_full_demo_reaches_080_accuracy(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--output-dir", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["eval_after"]["accuracy"] >= 0.80
    assert summary["total_wall_s"] < 600
