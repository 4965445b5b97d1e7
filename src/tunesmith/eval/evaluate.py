"""Run an evaluation: the objective produces outputs, the metric registry turns them into numbers.

The training run (before and after, and every ``eval_every`` steps), the INT8 export's
re-measuring and the benchmarks all evaluate through :func:`evaluate`, so a metric means
the same thing everywhere.
"""

from __future__ import annotations

from tunesmith.eval.metrics import compute, confusion_matrix


def evaluate(objective, model, features: list[dict], batch_size: int, device, metrics) -> dict:
    """Score ``model`` on ``features`` with the metrics named in ``metrics`` (a task's list).

    Classifiers also return ``confusion_matrix`` and ``_probs`` (per-example class
    probabilities, in order), which the report and predictions.jsonl use; reward models
    return ``_rewards`` (each pair's chosen and rejected reward). Keys starting with ``_``
    are raw outputs, not metrics.
    """
    outputs = objective.outputs(model, features, batch_size, device)
    result = compute(metrics, outputs)
    if "probs" in outputs:
        result["confusion_matrix"] = confusion_matrix(outputs["gold"], outputs["pred"], outputs["num_labels"])
        result["_probs"] = outputs["probs"].tolist()
    if "chosen" in outputs:  # a reward model: each pair's two rewards (the distribution plot)
        result["_rewards"] = {"chosen": outputs["chosen"], "rejected": outputs["rejected"]}
    return result


def scalar_metrics(metrics: dict) -> dict:
    """The numbers of an evaluation result, without raw outputs and matrices."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not k.startswith("_")}


def classification_summary(rows: list[dict], labels: list[str], before: dict, after: dict, seed: int) -> dict:
    """A classification run's full metrics (F1 variants, ROC-AUC, PR-AUC, calibration) before
    and after training, each with its bootstrap 95% interval, from the probabilities that
    :func:`evaluate` returned -- the same computation as ``tunesmith eval``."""
    from tunesmith.eval.classify import scores_with_intervals

    index = {label: i for i, label in enumerate(labels)}
    gold = [index[r["label"]] for r in rows]
    out = {}
    for name, result in (("before", before), ("after", after)):
        if "_probs" in result:
            out[name] = scores_with_intervals(gold, result["_probs"], labels, seed=seed)[1]
    return out
