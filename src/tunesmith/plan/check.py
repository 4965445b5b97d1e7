"""The memory preflight of `tunesmith train`: plan the run on its real data before the
model loads, and refuse a plan that exceeds the device budget by more than 10%, showing
the plan and the changes that would fit (``--force`` trains anyway)."""

from __future__ import annotations

import statistics

from tunesmith.errors import ConfigError

TOLERANCE = 1.10


def budget_bytes(config) -> int | None:
    """``train.memory_budget`` in bytes (None: the device's own)."""
    return int(config.train.memory_budget * 2**30) if config.train.memory_budget else None


def data_shape(features: list[dict]) -> tuple[int | None, float]:
    """The longest tokenized example, and the share of trained positions among the longest ones."""
    if not features or "input_ids" not in features[0]:
        return None, 1.0  # pairs (reward, preference) are planned at max_length
    ranked = sorted(features, key=lambda f: len(f["input_ids"]), reverse=True)[:32]
    if "labels" not in ranked[0]:
        return len(ranked[0]["input_ids"]), 1.0
    shares = [sum(1 for t in f["labels"] if t != -100) / max(len(f["labels"]), 1) for f in ranked]
    return len(ranked[0]["input_ids"]), max(statistics.mean(shares), 1e-3)


def check_memory(config, features: list[dict], source: str, log=print, refuse: bool = True,
                 vocab_rows: int | None = None):
    """Plan ``config`` on its features; raise when it clearly does not fit (unless not ``refuse``:
    a forced or resumed run plans only to settle ``gradient_checkpointing: auto``). Returns the
    plan; its ``settings`` say what ``auto`` chose. ``vocab_rows``: the embedding rows after
    vocabulary expansion."""
    from tunesmith.plan.advisor import advise, render_advice
    from tunesmith.plan.planner import make_plan
    from tunesmith.plan.render import render_plan, size

    longest, share = data_shape(features)
    budget = budget_bytes(config)
    plan = make_plan(config, longest=longest, target_share=share, budget_bytes=budget, source=source,
                     with_time=False, vocab_rows=vocab_rows)
    limit = plan.device["memory_bytes"]
    log(f"memory plan: {size(plan.total_bytes)} at the peak of {size(limit)} available")
    for note in plan.notes:
        if note.startswith("gradient checkpointing auto"):
            log(note)
    if refuse and plan.total_bytes > limit * TOLERANCE:
        advice = advise(config, plan, budget_bytes=budget or limit)
        raise ConfigError(
            f"The run needs about {size(plan.total_bytes)} and {size(limit)} is available "
            f"({100 * plan.total_bytes / limit:.0f}%).\n{render_plan(plan)}\n{render_advice(advice)}",
            "Apply the changes above with --set, or train anyway with --force.")
    return plan
