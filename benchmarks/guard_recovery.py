"""Injected loss spike + NaN: final loss with the guard, without it, and of a clean run.

Builds a tiny BERT (2 layers, hidden 32) from a config, trains it on synthetic sentiment
rows with Tunesmith's loop, and poisons chosen loss computations (x50 spike, NaN) and one
gradient (NaN via a hook). Prints one JSON line per variant.

Usage: python benchmarks/guard_recovery.py
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import torch
from accelerate import Accelerator
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from tunesmith.config.schema import GuardConfig, TrainConfig
from tunesmith.models.load import resolve_model_source
from tunesmith.synthetic import poisoned_classification, sentiment_rows
from tunesmith.train.backend import Backend
from tunesmith.train.loop import train

def run(poison, guard_on, grad_nan_at=None):
    tok = AutoTokenizer.from_pretrained(resolve_model_source("builtin:minilm"))
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2,
                                                     num_attention_heads=4, intermediate_size=64,
                                                     initializer_range=0.2, num_labels=2))
    objective = poisoned_classification(tok, ["negative", "positive"], 32, poison=poison)
    if grad_nan_at:
        calls = {"n": 0}

        def hook(grad):
            calls["n"] += 1
            return grad * float("nan") if calls["n"] == grad_nan_at else grad

        model.classifier.weight.register_hook(hook)
    cfg = TrainConfig(epochs=6, batch_size=16, lr=5e-3, log_every=1, warmup_ratio=0.0,
                      guard=GuardConfig(enabled=guard_on, min_history=5, max_skips=5))
    with tempfile.TemporaryDirectory() as tmp:
        stats = train(model, objective, objective.encode(sentiment_rows(160, 1)), cfg, lr=cfg.lr, seed=7, run_dir=Path(tmp),
                      backend=Backend(Accelerator(cpu=True)), show_progress=False)
        losses = [json.loads(line)["loss"] for line in (Path(tmp) / "metrics.jsonl").read_text().splitlines()]
        events = [json.loads(line) for line in (Path(tmp) / "events.jsonl").read_text().splitlines()]
    tail = sum(losses[-10:]) / 10
    return {"final_loss_mean_last_10": None if math.isnan(tail) else round(tail, 4),
            "skipped": stats.skipped_batches, "events": [e["reason"][:40] for e in events if e["event"] == "skip"]}


if __name__ == "__main__":
    poison = {20: "spike", 35: "nan"}
    clean = run({}, True)
    print(json.dumps({"variant": "clean", **clean}))
    print(json.dumps({"variant": "guard on, spike+NaN loss+NaN grad", **run(poison, True, grad_nan_at=50)}))
    print(json.dumps({"variant": "guard off, spike only", **run({20: "spike"}, False)}))
    print(json.dumps({"variant": "guard off, spike+NaN loss+NaN grad", **run(poison, False, grad_nan_at=50)}))
