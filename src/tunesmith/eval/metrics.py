"""The metric registry: metric name -> function of an objective's outputs, and its direction.

Objectives produce outputs (class probabilities and gold labels, or a mean token loss);
they do not decide which numbers a run reports or which way is better. Metrics are plain
functions on plain lists, so each can be checked by hand, and every consumer that ranks
by a metric (early stopping and keep_best in the loop, ``compare``, the report, the INT8
export's choice of setting) asks :func:`higher_is_better` instead of guessing.
"""

from __future__ import annotations

import bisect

import math
from dataclasses import dataclass
from typing import Callable


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


@dataclass(frozen=True)
class Metric:
    """A registered metric: ``fn(outputs) -> float`` and which way is better."""

    fn: Callable[[dict], float]
    higher_is_better: bool
    description: str


def _classification(outputs: dict) -> dict:
    return classification_metrics(outputs["gold"], outputs["pred"], outputs["num_labels"])


METRICS: dict[str, Metric] = {
    "accuracy": Metric(lambda o: _classification(o)["accuracy"], True, "share of examples whose top class is gold"),
    "macro_f1": Metric(lambda o: _classification(o)["macro_f1"], True, "F1 averaged over labels"),
    "eval_loss": Metric(lambda o: o["loss"], False,
                        "mean cross-entropy (per example for classifiers, per answer token for LMs)"),
    "perplexity": Metric(lambda o: perplexity(o["loss"]), False, "exp(eval_loss) of a language model"),
    "pairwise_accuracy": Metric(lambda o: _pairwise_accuracy(o), True,
                                "share of preference pairs whose chosen answer gets the higher reward (ties count "
                                "as wrong, as in TRL); for unpaired (KTO) answers, of all (desirable, undesirable) "
                                "twos"),
    "mean_reward": Metric(lambda o: _mean(o["rewards"]), True,
                          "mean reward (grpo.rewards) of the greedy answers to the held-out prompts"),
    "mean_margin": Metric(lambda o: _mean(o["chosen"]) - _mean(o["rejected"]), True,
                          "mean reward of the chosen (desirable) answers minus that of the rejected ones"),
}


def _pairwise_accuracy(outputs: dict) -> float:
    chosen, rejected = outputs["chosen"], outputs["rejected"]
    if not outputs.get("unpaired"):
        return _mean([c > r for c, r in zip(chosen, rejected)])
    # Every desirable answer against every undesirable one (the Mann-Whitney count), in n log n.
    ordered = sorted(rejected)
    if not chosen or not ordered:
        raise ValueError("no examples to score")
    return sum(bisect.bisect_left(ordered, c) for c in chosen) / (len(chosen) * len(ordered))


def _mean(values: list) -> float:
    if not values:
        raise ValueError("no examples to score")
    return sum(values) / len(values)


def higher_is_better(name: str) -> bool:
    """Direction of metric ``name``. Names outside the registry (a user's best_metric) fall
    back to the common convention: losses and perplexities fall, everything else rises."""
    if name in METRICS:
        return METRICS[name].higher_is_better
    return not ("loss" in name or "perplexity" in name)


def improved(value: float, best: float | None, name: str) -> bool:
    """Whether ``value`` of metric ``name`` beats ``best`` (anything beats no best yet)."""
    return best is None or (value > best if higher_is_better(name) else value < best)


def rank_key(name: str, value: float) -> float:
    """A sort key for metric values: larger is better, whatever the metric's direction."""
    return value if higher_is_better(name) else -value


def compute(names: tuple[str, ...] | list[str], outputs: dict) -> dict:
    """Every metric in ``names`` over ``outputs``, by name, in order."""
    return {name: METRICS[name].fn(outputs) for name in names}
