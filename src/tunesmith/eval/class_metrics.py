"""Classification metrics from gold labels and class probabilities, through scikit-learn.

Beyond accuracy and macro-F1 (``eval/metrics.py``), a classifier's report needs what
scikit-learn computes well — per-class precision/recall/F1, micro and weighted F1, ROC-AUC
and PR-AUC — plus what it lacks: calibration (expected calibration error and the
reliability diagram) and the most frequent confusions with example texts. Metrics that a
set cannot define (ROC-AUC when a class never occurs in gold) are None with a note, never
an exception, so one odd eval set does not fail a run. scikit-learn and matplotlib are
imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np

ECE_BINS = 10


def _check(gold: Sequence[int], probs, labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    gold_array, probs_array = np.asarray(gold, dtype=int), np.asarray(probs, dtype=float)
    n, classes = len(gold_array), len(labels)
    if n == 0:
        raise ValueError("no examples to score")
    if classes < 2:
        raise ValueError(f"classification needs at least 2 labels, got {classes}")
    if probs_array.shape != (n, classes):
        raise ValueError(f"probs must be {n} x {classes} (examples x labels), got {probs_array.shape}")
    if gold_array.min() < 0 or gold_array.max() >= classes:
        raise ValueError(f"gold labels must be in 0..{classes - 1}")
    # scikit-learn's one-vs-rest ROC-AUC demands rows summing to 1 at this tolerance; logits
    # would also make the calibration numbers meaningless, so say so up front.
    if not np.allclose(probs_array.sum(axis=1), 1.0, rtol=0, atol=1e-5) or probs_array.min() < 0:
        raise ValueError("probs rows must be probabilities summing to 1 (apply softmax to logits)")
    return gold_array, probs_array


def auc_undefined_reason(gold: Sequence[int], num_classes: int) -> str | None:
    """Why ROC-AUC and PR-AUC are undefined on this gold set (a label that never occurs, so
    its one-vs-rest curve has no positives), or None when they are defined."""
    missing = sorted(set(range(num_classes)) - set(int(g) for g in gold))
    if missing:
        return f"ROC-AUC and PR-AUC undefined: label(s) {missing} never occur in the gold labels"
    return None


def roc_auc(gold: Sequence[int], probs) -> float | None:
    """ROC-AUC: binary, of the class-1 probabilities; multi-class, one-vs-rest macro average.
    None when undefined (:func:`auc_undefined_reason`)."""
    from sklearn.metrics import roc_auc_score

    gold, probs = np.asarray(gold, dtype=int), np.asarray(probs, dtype=float)
    classes = probs.shape[1]
    if auc_undefined_reason(gold, classes):
        return None
    if classes == 2:
        return float(roc_auc_score(gold, probs[:, 1]))
    return float(roc_auc_score(gold, probs, multi_class="ovr", average="macro", labels=list(range(classes))))


def pr_auc(gold: Sequence[int], probs) -> float | None:
    """PR-AUC as average precision: binary, of class 1; multi-class, the macro average of
    each class against the rest. None when undefined (:func:`auc_undefined_reason`)."""
    from sklearn.metrics import average_precision_score
    from sklearn.preprocessing import label_binarize

    gold, probs = np.asarray(gold, dtype=int), np.asarray(probs, dtype=float)
    classes = probs.shape[1]
    if auc_undefined_reason(gold, classes):
        return None
    if classes == 2:
        return float(average_precision_score(gold, probs[:, 1]))
    return float(average_precision_score(label_binarize(gold, classes=list(range(classes))), probs, average="macro"))


def reliability_bins(gold: Sequence[int], probs, bins: int = ECE_BINS) -> list[dict]:
    """Top-label calibration in ``bins`` equal-width confidence bins ``(i/bins, (i+1)/bins]``
    (right-closed, as in Guo et al. 2017): for each, ``low``, ``high``, ``count``, mean
    ``confidence`` and ``accuracy`` (both None for an empty bin)."""
    gold, probs = np.asarray(gold, dtype=int), np.asarray(probs, dtype=float)
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == gold
    edges = np.linspace(0.0, 1.0, bins + 1)
    # side="left" puts a confidence equal to an edge in the bin that edge closes.
    which = np.searchsorted(edges[1:-1], confidence, side="left")
    out = []
    for i in range(bins):
        members = which == i
        count = int(members.sum())
        out.append({
            "low": float(edges[i]), "high": float(edges[i + 1]), "count": count,
            "confidence": float(confidence[members].mean()) if count else None,
            "accuracy": float(correct[members].mean()) if count else None,
        })
    return out


def expected_calibration_error(reliability: list[dict]) -> float:
    """ECE from :func:`reliability_bins`: |accuracy - confidence| per bin, weighted by the
    bin's share of the examples."""
    total = sum(b["count"] for b in reliability)
    return float(sum(b["count"] / total * abs(b["accuracy"] - b["confidence"]) for b in reliability if b["count"]))


def classification_scores(gold: Sequence[int], probs, labels: Sequence[str]) -> dict:
    """Every classification metric of one eval set; the prediction is the most probable label.

    Args:
        gold: gold label indices, one per example.
        probs: ``n x C`` class probabilities (rows sum to 1), C = ``len(labels)``.
        labels: the label names, index i naming class i.

    Returns:
        ``accuracy``; ``macro_f1``, ``micro_f1``, ``weighted_f1``, ``macro_precision``,
        ``macro_recall`` (a label never predicted has precision 0); ``per_class`` (label ->
        precision, recall, f1, support); ``roc_auc`` and ``pr_auc`` (None when undefined);
        ``ece`` and ``reliability`` (:func:`reliability_bins`); ``confusion_matrix`` (rows
        gold, columns predicted); ``notes`` (why anything is None).

    Raises:
        ValueError: on no examples, fewer than 2 labels, a probs shape that does not match,
            gold outside the labels, or rows that are not probabilities.
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    gold_array, probs_array = _check(gold, probs, labels)
    pred = probs_array.argmax(axis=1)
    every = list(range(len(labels)))
    # zero_division=0: a label never predicted scores 0 rather than warning, as in metrics.py.
    precision, recall, f1, support = precision_recall_fscore_support(gold_array, pred, labels=every, zero_division=0)
    notes = []
    reason = auc_undefined_reason(gold_array, len(labels))
    if reason:
        notes.append(reason)
    reliability = reliability_bins(gold_array, probs_array)
    return {
        "accuracy": float(accuracy_score(gold_array, pred)),
        **{f"{avg}_f1": float(f1_score(gold_array, pred, labels=every, average=avg, zero_division=0))
           for avg in ("macro", "micro", "weighted")},
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                   "support": int(support[i])}
            for i, name in enumerate(labels)
        },
        "roc_auc": roc_auc(gold_array, probs_array),
        "pr_auc": pr_auc(gold_array, probs_array),
        "ece": expected_calibration_error(reliability),
        "reliability": reliability,
        "confusion_matrix": confusion_matrix(gold_array, pred, labels=every).tolist(),
        "notes": notes,
    }


def top_confusions(gold: Sequence[int], pred: Sequence[int], texts: Sequence[str], labels: Sequence[str],
                   k: int = 5, examples: int = 3) -> list[dict]:
    """The ``k`` most frequent mistakes as (gold, predicted) label pairs, most frequent first
    (ties in label order). Each is a dict of ``gold`` and ``predicted`` (label names),
    ``count``, and ``examples``: the texts of the first ``examples`` such mistakes."""
    if not len(gold) == len(pred) == len(texts):
        raise ValueError(f"{len(gold)} gold labels, {len(pred)} predictions and {len(texts)} texts")
    counts: Counter = Counter()
    samples: dict[tuple[int, int], list[str]] = defaultdict(list)
    for g, p, text in zip(gold, pred, texts):
        if g != p:
            counts[(g, p)] += 1
            if len(samples[(g, p)]) < examples:
                samples[(g, p)].append(text)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:k]
    return [{"gold": labels[g], "predicted": labels[p], "count": count, "examples": samples[(g, p)]}
            for (g, p), count in ranked]


def reliability_plot(reliability: list[dict], path: Path) -> Path:
    """reliability.png: accuracy per confidence bin as bars against the diagonal of perfect
    calibration, with the ECE in the title. Returns ``path``."""
    # A Figure without pyplot: no global backend switch and no figure registry to leak,
    # with the look of eval/plots.py (its colours, grid and dpi).
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.5, 4.2))
    ax = fig.subplots()
    filled = [b for b in reliability if b["count"]]
    width = reliability[0]["high"] - reliability[0]["low"]
    ax.bar([b["low"] for b in filled], [b["accuracy"] for b in filled], width=width, align="edge",
           color="#4c72b0", edgecolor="white", label="accuracy")
    ax.bar([b["low"] for b in filled], [b["confidence"] - b["accuracy"] for b in filled], width=width,
           bottom=[b["accuracy"] for b in filled], align="edge", color="#dd8452", alpha=0.35, label="gap to confidence")
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top label)")
    ax.set_ylabel("accuracy")
    ece = expected_calibration_error(reliability) if filled else 0.0
    ax.set_title(f"reliability (ECE {ece:.3f}, n = {sum(b['count'] for b in reliability)})")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    return path
