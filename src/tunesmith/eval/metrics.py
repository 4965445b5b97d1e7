"""Metric functions on plain lists (no framework needed to check them by hand)."""

from __future__ import annotations

import math


def confusion_matrix(gold: list[int], pred: list[int], num_labels: int) -> list[list[int]]:
    """Rows are gold labels, columns predicted labels."""
    matrix = [[0] * num_labels for _ in range(num_labels)]
    for g, p in zip(gold, pred):
        matrix[g][p] += 1
    return matrix


def classification_metrics(gold: list[int], pred: list[int], num_labels: int) -> dict:
    """Accuracy and macro-F1 (F1 averaged over labels, so a minority class counts as much)."""
    if not gold:
        raise ValueError("no examples to score")
    matrix = confusion_matrix(gold, pred, num_labels)
    f1s = []
    for k in range(num_labels):
        tp = matrix[k][k]
        predicted = sum(matrix[g][k] for g in range(num_labels))
        actual = sum(matrix[k])
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1s.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return {
        "accuracy": sum(matrix[k][k] for k in range(num_labels)) / len(gold),
        "macro_f1": sum(f1s) / num_labels,
        "confusion_matrix": matrix,
    }


def perplexity(mean_token_loss: float) -> float:
    """exp(loss), capped so a diverged model reports inf instead of overflowing."""
    return math.exp(mean_token_loss) if mean_token_loss < 700 else float("inf")
