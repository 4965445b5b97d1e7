"""``tunesmith eval`` of a classifier: every classification metric with its bootstrap interval.

:mod:`tunesmith.eval.class_metrics` computes the metrics of a whole eval set through
scikit-learn; here each one also gets a 95% interval, and two classifiers scored on the
same rows get paired differences. F1, precision and recall are recomputed per resample
from a confusion matrix in numpy (a test checks they equal scikit-learn's on the full set),
because a thousand scikit-learn calls per metric would dominate the evaluation.
"""

from __future__ import annotations

import numpy as np

from tunesmith.eval.bootstrap import bootstrap_ci_indices, paired_bootstrap_indices
from tunesmith.eval.class_metrics import classification_scores, expected_calibration_error, pr_auc, \
    reliability_bins, roc_auc, top_confusions

CLASSIFICATION_METRICS = ("accuracy", "macro_f1", "micro_f1", "weighted_f1", "macro_precision", "macro_recall",
                          "roc_auc", "pr_auc", "ece")


def metric_functions(gold: np.ndarray, probs: np.ndarray) -> dict:
    """name -> fn(indices) -> value, for every metric in :data:`CLASSIFICATION_METRICS`."""
    classes = probs.shape[1]
    pred = probs.argmax(1)

    def counts(idx):
        matrix = np.bincount(gold[idx] * classes + pred[idx], minlength=classes * classes).reshape(classes, classes)
        tp = np.diag(matrix).astype(float)
        predicted, actual = matrix.sum(0), matrix.sum(1)
        precision = np.divide(tp, predicted, out=np.zeros(classes), where=predicted > 0)
        recall = np.divide(tp, actual, out=np.zeros(classes), where=actual > 0)
        f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(classes),
                       where=precision + recall > 0)
        return tp, actual, precision, recall, f1

    def auc(fn):
        return lambda idx: fn(gold[idx], probs[idx]) if len(np.unique(gold[idx])) == classes else None

    return {
        "accuracy": lambda idx: float(np.mean(gold[idx] == pred[idx])),
        "macro_f1": lambda idx: float(counts(idx)[4].mean()),
        # Single-label micro-F1 is accuracy (every error is one false positive and one false negative).
        "micro_f1": lambda idx: float(np.mean(gold[idx] == pred[idx])),
        "weighted_f1": lambda idx: float((lambda c: (c[4] * c[1]).sum() / c[1].sum())(counts(idx))),
        "macro_precision": lambda idx: float(counts(idx)[2].mean()),
        "macro_recall": lambda idx: float(counts(idx)[3].mean()),
        "roc_auc": auc(roc_auc),
        "pr_auc": auc(pr_auc),
        "ece": lambda idx: expected_calibration_error(reliability_bins(gold[idx], probs[idx])),
    }


def scores_with_intervals(gold, probs, labels: list[str], resamples: int = 1000, seed: int = 0) -> tuple[dict, dict]:
    """``(scores, metrics)``: scikit-learn's scores of the whole set (class_metrics), and
    each metric of :data:`CLASSIFICATION_METRICS` as ``{"value", "ci95"}`` (None where
    undefined). A classification run's summary and ``tunesmith eval`` both use this."""
    gold, probs = np.asarray(gold), np.asarray(probs, dtype=float)
    scores = classification_scores(gold, probs, labels)
    metrics = {}
    for name, fn in metric_functions(gold, probs).items():
        if scores[name] is None:
            metrics[name] = {"value": None, "ci95": None}
            continue
        low, high, _ = bootstrap_ci_indices(fn, len(gold), resamples, seed)
        metrics[name] = {"value": scores[name], "ci95": [low, high]}
    return scores, metrics


def classification_eval(target, rows: list[dict], resamples: int = 1000, seed: int = 0, batch_size: int = 32) -> dict:
    """Score ``target`` (a classifier :class:`~tunesmith.eval.targets.Target`) on labelled rows."""
    objective = target.objective()
    outputs = objective.outputs(target.model, objective.encode(rows), batch_size, target.model.device)
    gold, probs = np.asarray(outputs["gold"]), outputs["probs"].numpy().astype(float)
    labels = target.labels
    scores, metrics = scores_with_intervals(gold, probs, labels, resamples, seed)
    pred = probs.argmax(1)
    texts = [r["text"] for r in rows]
    predictions = [{"id": str(r.get("id", i)), "text": r["text"], "reference": r["label"],
                    "prediction": labels[int(p)], "correct": bool(g == p),
                    "probs": {label: round(float(x), 6) for label, x in zip(labels, row)}}
                   for i, (r, g, p, row) in enumerate(zip(rows, gold, pred, probs))]
    return {"metrics": metrics, "predictions": predictions, "per_class": scores["per_class"],
            "confusion_matrix": scores["confusion_matrix"], "labels": labels, "reliability": scores["reliability"],
            "top_confusions": top_confusions(gold.tolist(), pred.tolist(), texts, labels),
            "notes": scores["notes"], "_gold": gold, "_probs": probs}


def classification_deltas(baseline: dict, candidate: dict, resamples: int = 1000, seed: int = 0) -> dict:
    """Per metric: candidate minus baseline on the same rows, paired-bootstrap interval and p-value."""
    gold = candidate["_gold"]
    mine, theirs = metric_functions(gold, candidate["_probs"]), metric_functions(gold, baseline["_probs"])
    deltas = {}
    for name in CLASSIFICATION_METRICS:
        if candidate["metrics"][name]["value"] is None or baseline["metrics"][name]["value"] is None:
            continue
        deltas[name] = paired_bootstrap_indices(theirs[name], mine[name], len(gold), resamples, seed)
    return deltas
