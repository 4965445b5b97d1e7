"""Method-specific training state survives checkpoints: AdaLoRA prunes ranks and resumes
exactly; adapters, prompts, prefixes and IA3 vectors resume exactly too."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import copy_as_crashed_after
from tunesmith.cli import main

ADALORA = {"type": "adalora", "init_r": 6, "target_r": 2, "tinit": 0.1, "tfinal": 0.3, "delta_t": 2, "dropout": 0.1}
ARGS = ["--set", f"method={json.dumps(ADALORA)}", "--set", "train.lr=2e-2", "--set", "train.log_every=1",
        "--set", "train.save_every=1", "--set", "train.keep_last_n=100", "--set", "train.epochs=3"]


def _losses(run_dir):
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_adalora_prunes_to_the_target_budget_and_resumes_exactly(chat_recipe, tmp_path):
    reference = tmp_path / "reference"
    assert main(["train", str(chat_recipe), "--output-dir", str(reference), *ARGS]) == 0
    config = json.loads((reference / "final" / "adapter_config.json").read_text())
    assert config["rank_pattern"], "the rank allocator never ran"
    kept = [sum(mask) for mask in config["rank_pattern"].values()]
    # Budget: target_r per matrix on average (PEFT counts the budget over all adapted matrices).
    assert sum(kept) == ADALORA["target_r"] * len(kept)
    assert min(kept) < ADALORA["init_r"]  # some matrices really lost rank
    weights = load_file(reference / "final" / "adapter_model.safetensors")
    for name, tensor in weights.items():
        if "lora_E" in name:  # pruned singular values are exactly zero
            assert int((tensor != 0).sum()) <= ADALORA["init_r"]

    ref_losses = _losses(reference)
    steps = len(ref_losses)
    k = steps // 2  # mid-way through pruning: the allocator's scores must come back too
    run = tmp_path / "resumed"
    copy_as_crashed_after(reference, run, k)
    assert main(["train", str(chat_recipe), "--output-dir", str(run), "--resume", *ARGS]) == 0
    assert _losses(run) == pytest.approx(ref_losses, abs=1e-6)
    resumed = load_file(run / "final" / "adapter_model.safetensors")
    assert all(torch.equal(resumed[n], weights[n]) for n in weights)


@pytest.mark.parametrize("method", [
    {"type": "adapter", "style": "parallel", "reduction_factor": 4},
    {"type": "prompt", "num_virtual_tokens": 4},
    {"type": "prefix", "num_virtual_tokens": 4, "projection": True, "projection_hidden": 16},
    {"type": "ia3"},
], ids=lambda m: m["type"])
def test_resume_is_exact_for_every_kind_of_checkpoint(method, chat_recipe, tmp_path):
    # Adapters checkpoint the whole model, PEFT methods only their own tensors; both resume exactly.
    args = [a if not a.startswith("method=") else "method=" + json.dumps(method) for a in ARGS]
    reference = tmp_path / "reference"
    assert main(["train", str(chat_recipe), "--output-dir", str(reference), *args]) == 0
    ref_losses = _losses(reference)
    run = tmp_path / "resumed"
    copy_as_crashed_after(reference, run, len(ref_losses) // 2)
    assert main(["train", str(chat_recipe), "--output-dir", str(run), "--resume", *args]) == 0
    assert _losses(run) == pytest.approx(ref_losses, abs=1e-6)
