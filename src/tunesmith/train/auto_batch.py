"""``train.batch_size: auto``: the largest micro-batch that really fits, found by trying.

Candidates are the divisors of the global batch (so ``grad_accum`` keeps it exactly).
Each try runs a real forward and backward pass on the longest training examples and
measures the peak: ``torch.cuda.max_memory_allocated`` on a GPU (an out-of-memory error
is a no), the process's resident high-water mark on a CPU (Linux resets it through
``/proc/self/clear_refs``). The optimizer's moments and its step temporary do not exist
yet during the try, so they are added from the trained parameters' size. A binary search
needs about log2(candidates) tries.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from tunesmith.train.precision import autocast

CLEAR_REFS = Path("/proc/self/clear_refs")


@dataclass
class BatchSearch:
    """The search's result: the chosen micro-batch and every try's measured peak."""

    micro_batch: int
    grad_accum: int
    tries: dict[int, int]  # micro-batch -> peak bytes (optimizer state included); -1: out of memory
    budget_bytes: int


def _resident_peak() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def can_measure_cpu_peaks() -> bool:
    """Whether this system lets a process reset and read its resident high-water mark."""
    return CLEAR_REFS.exists() and Path("/proc/self/status").exists()


def measure_step(model, objective, features: list[dict], rows: int, device, precision: str) -> int | None:
    """Peak bytes of one forward + backward on the ``rows`` longest examples (None: out of memory)."""
    length = getattr(objective, "feature_length", lambda f: len(f["input_ids"]))
    longest = sorted(features, key=length, reverse=True)[:rows]
    batch = {k: v.to(device) for k, v in objective.collate(longest).items()}
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    else:
        CLEAR_REFS.write_text("5")  # resets VmHWM to the current resident size
    try:
        with autocast(device, precision):
            loss = objective.loss_sum(model, batch)
        loss.backward()
    except torch.OutOfMemoryError:
        return None
    finally:
        model.zero_grad(set_to_none=True)
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else _resident_peak()


def find_micro_batch(model, objective, features: list[dict], global_batch: int, budget_bytes: int, device,
                     precision: str, log=print) -> BatchSearch:
    """The largest divisor of ``global_batch`` whose measured step fits in ``budget_bytes``."""
    trained = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    optimizer_bytes = 3 * trained  # AdamW's two moments, and the step's temporary
    candidates = [d for d in range(1, min(global_batch, len(features)) + 1) if global_batch % d == 0]
    tries: dict[int, int] = {}
    low, high, best = 0, len(candidates) - 1, candidates[0]
    was_training = model.training
    model.train()
    while low <= high:
        middle = (low + high) // 2
        rows = candidates[middle]
        peak = measure_step(model, objective, features, rows, device, precision)
        tries[rows] = -1 if peak is None else peak + optimizer_bytes
        fits = peak is not None and tries[rows] <= budget_bytes
        log(f"batch_size auto: {rows} rows -> " + ("out of memory" if peak is None else
            f"{tries[rows] / 2**20:,.0f} MiB of {budget_bytes / 2**20:,.0f} MiB") + (" (fits)" if fits else ""))
        if fits:
            best, low = rows, middle + 1
        else:
            high = middle - 1
    model.train(was_training)
    return BatchSearch(best, global_batch // best, tries, budget_bytes)
