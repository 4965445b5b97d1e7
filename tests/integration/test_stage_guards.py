"""The numerical-health guard acts on the reward-model and GRPO losses too (shared-prompt rows)."""

from __future__ import annotations

import json
import math

import torch
from accelerate import Accelerator
from transformers import AutoModelForSequenceClassification

from tunesmith.config.schema import GrpoConfig, GuardConfig, LoraMethod, TrainConfig
from tunesmith.methods import apply_method
from tunesmith.models.load import load_model
from tunesmith.objectives.grpo import GrpoObjective
from tunesmith.objectives.reward import RewardObjective
from tunesmith.synthetic import poison_losses, preference_rows
from tunesmith.testing import GRPO_QUESTIONS
from tunesmith.train.backend import Backend
from tunesmith.train.loop import train


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _train(model, objective, features, run_dir, epochs):
    cfg = TrainConfig(epochs=epochs, batch_size=4, lr=5e-3, log_every=1, guard=GuardConfig(min_history=3))
    return train(model, objective, features, cfg, lr=cfg.lr, seed=7, run_dir=run_dir,
                 backend=Backend(Accelerator(cpu=True)), show_progress=False)


def _assert_one_nan_skipped(stats, run_dir):
    skips = [e for e in _lines(run_dir / "events.jsonl") if e["event"] == "skip"]
    # The poisoned step is skipped (the guard may also skip real spikes of a tiny model later).
    assert [e["reason"] for e in skips if e["reason"].startswith("non-finite")] == ["non-finite loss (nan)"]
    assert stats.skipped_batches == len(skips) >= 1
    assert all(math.isfinite(r["loss"]) for r in _lines(run_dir / "metrics.jsonl"))


def test_the_guard_skips_a_nan_reward_model_loss_and_the_loss_still_falls(tmp_path, tiny_llama_dir):
    torch.manual_seed(0)
    model, tokenizer = load_model(str(tiny_llama_dir), "classification", num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    model = apply_method(model, LoraMethod(r=8, alpha=16, dropout=0.0), "classification")
    objective = poison_losses(RewardObjective(tokenizer, 48, padding_free=True), {5: "nan"})
    features = objective.encode(preference_rows(48, seed=1))
    stats = _train(model, objective, features, tmp_path, epochs=4)
    _assert_one_nan_skipped(stats, tmp_path)
    losses = [r["loss"] for r in _lines(tmp_path / "metrics.jsonl")]
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.1


def test_the_guard_skips_a_nan_grpo_loss_and_training_goes_on(tmp_path, tiny_llama_dir):
    torch.manual_seed(0)
    model, tokenizer = load_model(str(tiny_llama_dir), "causal_lm")
    model = apply_method(model, LoraMethod(r=8, alpha=16, dropout=0.0), "causal_lm")
    settings = GrpoConfig(rewards=[{"type": "length", "min_words": 2, "max_words": 4}], num_generations=4,
                          max_new_tokens=6)
    objective = poison_losses(GrpoObjective(tokenizer, 32, settings, padding_free=True), {3: "nan"})
    features = objective.encode([{"messages": [{"role": "user", "content": q}]} for q in GRPO_QUESTIONS[:8]])
    stats = _train(model, objective, features, tmp_path, epochs=2)
    _assert_one_nan_skipped(stats, tmp_path)
    assert len(_lines(tmp_path / "metrics.jsonl")) == 4  # every step ran, the poisoned one skipped
