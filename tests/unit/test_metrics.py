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


# ----------------------------------------------------------------------------- the registry


def test_registry_directions_and_ranking():
    from tunesmith.eval.metrics import METRICS, higher_is_better, improved, rank_key

    assert METRICS["accuracy"].higher_is_better and METRICS["macro_f1"].higher_is_better
    assert not METRICS["eval_loss"].higher_is_better and not METRICS["perplexity"].higher_is_better
    assert improved(0.8, 0.7, "accuracy") and not improved(0.6, 0.7, "accuracy")
    assert improved(1.0, 1.2, "eval_loss") and not improved(1.3, 1.2, "eval_loss")
    assert improved(5.0, None, "eval_loss")
    # a user's own metric name: losses fall, scores rise
    assert not higher_is_better("my_loss") and higher_is_better("bleu")
    assert max([0.9, 0.4], key=lambda v: rank_key("eval_loss", v)) == 0.4


def test_evaluate_turns_objective_outputs_into_registered_metrics():
    import torch

    from tunesmith.eval.evaluate import evaluate

    class Fixed:
        def outputs(self, model, features, batch_size, device):
            probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
            return {"probs": probs, "pred": [0, 1, 0], "gold": [0, 1, 1], "num_labels": 2, "loss": 0.5}

    result = evaluate(Fixed(), None, [], 8, "cpu", ("accuracy", "macro_f1", "eval_loss"))
    assert list(result)[:3] == ["accuracy", "macro_f1", "eval_loss"]
    assert result["accuracy"] == pytest.approx(2 / 3) and result["eval_loss"] == 0.5
    assert result["macro_f1"] == pytest.approx(classification_metrics([0, 1, 1], [0, 1, 0], 2)["macro_f1"])
    assert result["confusion_matrix"] == [[1, 0], [1, 1]]
    assert result["_probs"][1] == pytest.approx([0.2, 0.8])
