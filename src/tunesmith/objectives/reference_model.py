"""Where a preference or GRPO run's reference model comes from, decided once before training.

- ``precompute_reference`` (and always for a preference run that continues an adapter,
  whose reference is that starting policy): the starting model scores every answer once; the
  log-probs ride in the features and are cached next to the tokenized data, keyed by
  the model that computed them, so a resumed or repeated run reads them back.
- a PEFT method: nothing to do -- the policy with its adapters disabled is the base.
- otherwise (full, freeze, BitFit, bottleneck adapters; a GRPO run that continues an
  adapter, whose answers are sampled as it trains): a frozen copy of the starting model.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
from pathlib import Path

import numpy as np

from tunesmith.data import cache as data_cache
from tunesmith.storage import atomic_write_bytes


def prepare_reference(objective, model, config, train_features: list[dict], eval_features: list[dict],
                      data_key: str | None, device, log=print) -> str | None:
    """Set up ``objective``'s reference from ``model`` (the starting policy, before the
    method wraps it); returns how (``"precomputed"``, ``"cached"``, ``"adapters disabled"``,
    ``"frozen copy"``) or None for a loss without a reference."""
    from tunesmith.config.methods import method_info

    if not getattr(objective, "uses_reference", False):
        return None
    # Log-probs of fixed answers can be computed ahead; GRPO's answers are sampled as it trains.
    can_precompute = hasattr(objective, "precompute_reference")
    if can_precompute and (config.preference.precompute_reference or config.model.adapter_from):
        where = _cache_file(data_key, config) if data_key else None
        cached = _load(where, len(train_features), len(eval_features)) if where else None
        how = "cached"
        if cached is None:
            how = "precomputed"
            log("computing the reference log-probs once ...")
            batch = config.train.eval_batch_size
            cached = (objective.precompute_reference(model, train_features, batch, device),
                      objective.precompute_reference(model, eval_features, batch, device))
            if where:
                _save(where, *cached)
        for features, refs in zip((train_features, eval_features), cached):
            for feature, ref in zip(features, refs):
                feature["ref"] = list(ref)
        return how
    if method_info(config.method.type).family == "peft" and not config.model.adapter_from:
        return "adapters disabled"
    objective.reference_model = copy.deepcopy(model).eval().requires_grad_(False)
    return "frozen copy"


def _cache_file(data_key: str, config) -> Path:
    """The reference cache of this data, keyed by the model that computes it."""
    model = data_cache.starting_model_key(config)
    digest = hashlib.sha256(json.dumps(model, sort_keys=True).encode()).hexdigest()[:16]
    return data_cache.cache_dir(data_key) / f"reference-{digest}.npz"


def _load(path: Path, train_rows: int, eval_rows: int):
    try:
        with np.load(path, allow_pickle=False) as arrays:
            train, evaluation = arrays["train"], arrays["eval"]
    except (OSError, KeyError, ValueError):
        return None
    if len(train) != train_rows or len(evaluation) != eval_rows:
        return None
    return train.tolist(), evaluation.tolist()


def _save(path: Path, train: list, evaluation: list) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, train=np.asarray(train, dtype=np.float64).reshape(-1, 2),
             eval=np.asarray(evaluation, dtype=np.float64).reshape(-1, 2))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, buffer.getvalue())
    except OSError:
        pass  # an unwritable cache only means computing again next time
