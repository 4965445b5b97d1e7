"""``tunesmith eval`` of a reward model: how well it ranks held-out preference pairs.

Each pair's chosen and rejected answers are scored (rendered as in training, by
:class:`~tunesmith.objectives.reward.RewardObjective`); every metric is a mean of a
per-pair statistic, so its bootstrap interval and a paired comparison with a second
reward model come from :mod:`tunesmith.eval.bootstrap` directly.
"""

from __future__ import annotations

import numpy as np

from tunesmith.data.template import as_text
from tunesmith.eval.bootstrap import bootstrap_ci, paired_bootstrap

# name -> column of the per-pair statistics; pairwise_accuracy counts ties as wrong (as training does).
REWARD_METRICS = {"pairwise_accuracy": 0, "mean_margin": 1, "mean_chosen": 2, "mean_rejected": 3, "eval_loss": 4}


def reward_eval(target, rows: list[dict], resamples: int = 1000, seed: int = 0, batch_size: int = 16) -> dict:
    """Score ``target`` (a reward model :class:`~tunesmith.eval.targets.Target`) on pairs.

    Returns ``{"metrics": {name: {"value", "ci95"}}, "predictions": [...], "_stats"}``:
    one prediction per pair (id, prompt, chosen, rejected, both rewards, margin, correct).
    """
    objective = target.objective()
    outputs = objective.outputs(target.model, objective.encode(rows), batch_size, target.model.device)
    stats = pair_statistics(np.asarray(outputs["chosen"]), np.asarray(outputs["rejected"]))
    metrics = {}
    for name, column in REWARD_METRICS.items():
        low, high = bootstrap_ci(stats[:, column], resamples=resamples, seed=seed)
        metrics[name] = {"value": float(stats[:, column].mean()), "ci95": [low, high]}
    predictions = [{"id": str(row.get("id", i)), "prompt": as_text(row["prompt"]), "chosen": as_text(row["chosen"]),
                    "rejected": as_text(row["rejected"]), "reward_chosen": round(float(s[2]), 6),
                    "reward_rejected": round(float(s[3]), 6), "margin": round(float(s[1]), 6),
                    "correct": bool(s[0])}
                   for i, (row, s) in enumerate(zip(rows, stats))]
    return {"metrics": metrics, "predictions": predictions, "notes": [], "_stats": stats}


def pair_statistics(chosen: np.ndarray, rejected: np.ndarray) -> np.ndarray:
    """Per pair: correct (1 when chosen wins strictly), margin, chosen reward, rejected
    reward, Bradley-Terry loss -- the columns of :data:`REWARD_METRICS`."""
    margin = chosen - rejected
    loss = np.logaddexp(0.0, -margin)  # -log sigmoid(margin), stable for large margins
    return np.stack([(margin > 0).astype(float), margin, chosen, rejected, loss], axis=1)


def reward_deltas(baseline: dict, candidate: dict, resamples: int = 1000, seed: int = 0) -> dict:
    """Per metric: candidate minus baseline on the same pairs, with a paired-bootstrap
    interval and p-value."""
    return {name: paired_bootstrap(baseline["_stats"][:, column], candidate["_stats"][:, column], resamples=resamples,
                                   seed=seed)
            for name, column in REWARD_METRICS.items()}
