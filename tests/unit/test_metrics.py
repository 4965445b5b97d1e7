"""Classification metrics and perplexity against hand-computed values."""

from __future__ import annotations

import math

import pytest

from tunesmith.eval.metrics import classification_metrics, confusion_matrix, perplexity

# label 2 occurs in the gold labels but is never predicted
GOLD = [0, 0, 0, 1, 1, 2, 2, 2]
PRED = [0, 0, 1, 1, 0, 1, 1, 1]


def test_confusion_matrix_rows_are_gold_columns_predicted():
    assert confusion_matrix(GOLD, PRED, 3) == [
        [2, 1, 0],
        [1, 1, 0],
        [0, 3, 0],
    ]
    assert confusion_matrix([1], [0], 2) == [[0, 0], [1, 0]]


def test_accuracy_and_macro_f1_by_hand():
    m = classification_metrics(GOLD, PRED, 3)
    assert m["accuracy"] == pytest.approx(3 / 8)
    # label 0: P = 2/3, R = 2/3 -> F1 2/3;  label 1: P = 1/5, R = 1/2 -> F1 2/7;  label 2: never predicted -> 0
    assert m["macro_f1"] == pytest.approx((2 / 3 + 2 / 7 + 0) / 3)
    assert m["confusion_matrix"] == confusion_matrix(GOLD, PRED, 3)


def test_macro_f1_weighs_minority_class_equally():
    gold = [0] * 9 + [1]
    pred = [0] * 10  # always the majority class
    m = classification_metrics(gold, pred, 2)
    assert m["accuracy"] == pytest.approx(0.9)
    # label 0: P = 9/10, R = 1 -> F1 18/19; label 1: 0
    assert m["macro_f1"] == pytest.approx((18 / 19) / 2)


def test_perfect_predictions():
    m = classification_metrics([0, 1, 2, 1], [0, 1, 2, 1], 3)
    assert m["accuracy"] == 1.0 and m["macro_f1"] == 1.0


def test_no_examples_is_an_error():
    with pytest.raises(ValueError, match="no examples"):
        classification_metrics([], [], 2)


def test_perplexity():
    assert perplexity(0.0) == 1.0
    assert perplexity(math.log(5)) == pytest.approx(5.0)
    assert perplexity(2.0) == pytest.approx(math.e**2)
    assert perplexity(1000.0) == float("inf")  # diverged: no OverflowError
