"""A run's data stage: read, validate, clean, split and tokenize the recipe's data -- or take
the result from the data cache when the same inputs were prepared before -- and report
what happened to the rows (invalid, leaked, overlong, packed) in the summary."""

from __future__ import annotations

import time

from tunesmith.data import cache as data_cache
from tunesmith.data.dedup import leakage_summary
from tunesmith.data.packing import pack_features, packing_efficiency
from tunesmith.data.pipeline import prepare_data
from tunesmith.objectives.rejections import generate_rejections
from tunesmith.config.schema import RecipeConfig
from tunesmith.objectives.tasks import spec_for


def make_objective(config: RecipeConfig, tokenizer, labels):
    """The task's objective (from the task registry): how records become batches and losses."""
    return spec_for(config).make_objective(config, tokenizer, labels)


def prepare_features(config: RecipeConfig, base_dir, tokenizer, summary: dict, log, show_progress: bool = True,
                     device="cpu"):
    """The data stage and tokenization, from the cache when the same inputs were prepared
    before: returns ``(data, objective, train_features, eval_features)``. ``device``: where
    the starting model writes generated rejections (``data.generate_rejected``)."""
    started = time.perf_counter()
    key = data_cache.fingerprint(config, base_dir, tokenizer) if config.data.cache else None
    cached = data_cache.load(key) if key else None
    if cached is not None:
        data, train_features, eval_features, extra = cached
        objective = make_objective(config, tokenizer, data.labels)
        summary["data"] = dict(data.info, **extra, cache={"key": key, "hit": True})
        log(f"data: {len(data.train)} train / {len(data.eval)} eval rows (tokenized data from the cache)")
    else:
        data = prepare_data(config.data, spec_for(config).shape, config.seed, base_dir)
        log(f"data: {len(data.train)} train / {len(data.eval)} eval rows")
        extra = {}
        if config.data.generate_rejected is not None:
            extra["rejections"] = generate_rejections(data, config, tokenizer, device, log, show_progress)
        objective = make_objective(config, tokenizer, data.labels)
        train_features = objective.encode(data.train)
        extra["overlength_train"] = objective.overlength_report
        if getattr(objective, "history_report", None):
            extra["history_train"] = objective.history_report
        # Eval rows are truncated rather than dropped: predictions.jsonl pairs them with eval_set.jsonl.
        if objective.overlength == "drop":
            objective.overlength = "truncate"
        eval_features = objective.encode(data.eval)
        extra["overlength_eval"] = objective.overlength_report
        if config.data.packing:  # training rows only: evaluation stays one example per row
            packed = pack_features(train_features, config.data.max_length)
            extra["packing"] = packing_efficiency(train_features, packed, config.data.max_length)
            train_features = packed
        if key:
            data_cache.save(key, data, train_features, eval_features, extra)
        summary["data"] = dict(data.info, **extra, cache={"key": key, "hit": False} if key else None)
    if data.rejects:
        log(f"data: {len(data.rejects)} invalid rows left out ({config.data.on_error}): "
            + ", ".join(f"{code} {n}" for code, n in data.info["validation"]["by_reason"].items()))
    leak = summary["data"].get("leakage")
    if leak and leak["exact"] + leak["near"] > leak.get("removed", 0):
        # Held-out rows seen in training inflate every eval number: say so before training.
        log(f"warning: {leakage_summary(leak)}. Eval metrics will look better than they are; deduplicate "
            "(data.dedup), or set data.leakage: remove (or error).")
    if "packing" in summary["data"]:
        packing = summary["data"]["packing"]
        log(f"data: packed {packing['examples']} examples into {packing['rows']} rows "
            f"({100 * packing['fill']:.0f}% of token slots used)")
    for split in ("train", "eval"):
        report = summary["data"][f"overlength_{split}"]
        if report["rows"]:
            log(f"data: {report['rows']} {split} rows longer than {report['max_length']} tokens ({report['policy']})")
    summary["data"]["prepare_s"] = round(time.perf_counter() - started, 3)
    return data, objective, train_features, eval_features
