"""The shipped chat-SFT recipe on the real SmolLM2-135M (slow: about 5 minutes on 2 CPU cores)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunesmith.cli import main

RECIPE = Path(__file__).resolve().parents[2] / "configs" / "sft-identity-lora.yaml"


@pytest.mark.slow
def test_identity_recipe_teaches_the_new_name_and_keeps_general_answers(tmp_path):
    assert main(["train", str(RECIPE), "--output-dir", str(tmp_path / "run")]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["eval_after"]["eval_loss"] < summary["eval_before"]["eval_loss"]
    answers = {p["input"]: p for p in summary["probes"]}
    assert "Quill" not in answers["Who are you?"]["before"]
    assert "Quill" in answers["Who are you?"]["after"]
    assert "Tunesmith" in answers["你是谁？"]["after"]
    assert "Paris" in answers["What is the capital of France?"]["after"]
    assert summary["total_wall_s"] < 15 * 60
