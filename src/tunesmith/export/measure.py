"""What an export is judged by, measured the same way for every format: the task's metrics on
the run's held-out set, latency at batch 1 and at a full batch, parameters and size on disk."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from tunesmith.eval.evaluate import evaluate
from tunesmith.objectives.causal_lm import CausalLMObjective
from tunesmith.objectives.classification import ClassificationObjective

LATENCY_EXAMPLES = 64
BATCH = 64
BATCH_REPEATS = 5


def objective_for(meta: dict, tokenizer):
    """The objective that scores a saved model of ``meta``'s task on its held-out rows."""
    if meta["task"] == "classification":
        return ClassificationObjective(tokenizer, meta["labels"], meta.get("max_length") or 512)
    return CausalLMObjective(tokenizer, meta.get("max_length") or 512, meta.get("system_prompt"))


def score(objective, model, features: list[dict], metrics: tuple[str, ...]) -> dict:
    """``metrics`` of ``model`` on ``features`` (CPU, batches of 16), rounded to 6 places."""
    result = evaluate(objective, model, features, 16, "cpu", metrics)
    return {k: round(float(result[k]), 6) for k in metrics}


@torch.inference_mode()
def latency_ms(model, objective, features: list[dict]) -> float:
    """Median milliseconds per example at batch size 1 (what one request costs)."""
    times = []
    for feature in features[:LATENCY_EXAMPLES]:
        batch = objective.collate([feature])
        start = time.perf_counter()
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 3)


@torch.inference_mode()
def batch_latency_ms(model, objective, features: list[dict], batch: int = BATCH) -> float:
    """Median milliseconds for one forward pass over ``batch`` examples (throughput use)."""
    inputs = objective.collate(features[:batch])
    times = []
    for _ in range(BATCH_REPEATS):
        start = time.perf_counter()
        model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 3)


def folder_mb(folder: Path, suffix: str = ".safetensors") -> float:
    """Size of the weight files in ``folder``, in MiB."""
    return round(sum(p.stat().st_size for p in Path(folder).glob(f"*{suffix}")) / 2**20, 2)


def change(before: dict, after: dict) -> dict:
    """after minus before for each metric (accuracy points, loss, perplexity)."""
    return {k: round(after[k] - before[k], 6) for k in before if k in after}
