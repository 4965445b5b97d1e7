"""Classification metrics against scikit-learn on fixed binary and 3-class sets, and
calibration, confusions and undefined AUCs against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, precision_recall_fscore_support, roc_auc_score

from tunesmith.eval import class_metrics as cm
from tunesmith.eval.bootstrap import bootstrap_ci_indices

BIN_GOLD = [0, 1, 1, 0, 1, 0, 1, 1, 0, 0]
BIN_P1 = np.array([0.1, 0.8, 0.6, 0.4, 0.35, 0.2, 0.9, 0.55, 0.65, 0.3])
BIN_PROBS = np.stack([1 - BIN_P1, BIN_P1], axis=1)

TRI_GOLD = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 0, 1, 2])
TRI_PROBS = np.array([
    [0.7, 0.2, 0.1], [0.5, 0.3, 0.2], [0.3, 0.4, 0.3], [0.6, 0.1, 0.3],
    [0.2, 0.6, 0.2], [0.1, 0.8, 0.1], [0.5, 0.4, 0.1], [0.3, 0.3, 0.4],
    [0.1, 0.2, 0.7], [0.2, 0.5, 0.3], [0.25, 0.25, 0.5], [0.1, 0.1, 0.8],
    [0.4, 0.35, 0.25], [0.2, 0.45, 0.35], [0.6, 0.1, 0.3],
])


@pytest.mark.parametrize("gold, probs, labels", [
    (BIN_GOLD, BIN_PROBS, ["neg", "pos"]),
    (TRI_GOLD, TRI_PROBS, ["a", "b", "c"]),
])
def test_label_metrics_equal_scikit_learn(gold, probs, labels):
    scores = cm.classification_scores(gold, probs, labels)
    pred = np.asarray(probs).argmax(axis=1)
    assert scores["accuracy"] == pytest.approx(np.mean(pred == np.asarray(gold)))
    for avg in ("macro", "micro", "weighted"):
        assert scores[f"{avg}_f1"] == pytest.approx(f1_score(gold, pred, average=avg), abs=1e-6)
    precision, recall, f1, support = precision_recall_fscore_support(gold, pred)
    assert scores["macro_precision"] == pytest.approx(precision.mean(), abs=1e-6)
    assert scores["macro_recall"] == pytest.approx(recall.mean(), abs=1e-6)
    for i, name in enumerate(labels):
        row = scores["per_class"][name]
        assert (row["precision"], row["recall"], row["f1"]) == pytest.approx((precision[i], recall[i], f1[i]), abs=1e-6)
        assert row["support"] == support[i]
    assert 0.5 < scores["accuracy"] < 1  # neither trivial nor perfect
    assert scores["notes"] == []


def test_binary_aucs_equal_scikit_learn_on_the_positive_class():
    scores = cm.classification_scores(BIN_GOLD, BIN_PROBS, ["neg", "pos"])
    assert scores["roc_auc"] == pytest.approx(roc_auc_score(BIN_GOLD, BIN_P1), abs=1e-6)
    assert scores["pr_auc"] == pytest.approx(average_precision_score(BIN_GOLD, BIN_P1), abs=1e-6)
    assert scores["roc_auc"] == pytest.approx(21 / 25)  # 21 of the 25 (pos, neg) pairs ranked right


def test_multiclass_aucs_are_one_vs_rest_macro_averages():
    scores = cm.classification_scores(TRI_GOLD, TRI_PROBS, ["a", "b", "c"])
    assert scores["roc_auc"] == pytest.approx(
        roc_auc_score(TRI_GOLD, TRI_PROBS, multi_class="ovr", average="macro", labels=[0, 1, 2]), abs=1e-6)
    one_vs_rest_roc = [roc_auc_score(TRI_GOLD == k, TRI_PROBS[:, k]) for k in range(3)]
    one_vs_rest_ap = [average_precision_score(TRI_GOLD == k, TRI_PROBS[:, k]) for k in range(3)]
    assert scores["roc_auc"] == pytest.approx(np.mean(one_vs_rest_roc), abs=1e-6)
    assert scores["pr_auc"] == pytest.approx(np.mean(one_vs_rest_ap), abs=1e-6)


def test_confusion_matrix_rows_are_gold():
    scores = cm.classification_scores(TRI_GOLD, TRI_PROBS, ["a", "b", "c"])
    assert scores["confusion_matrix"] == [[4, 1, 0], [1, 3, 1], [1, 1, 3]]
    assert scores["accuracy"] == pytest.approx(10 / 15)


def test_ece_and_reliability_by_hand():
    # confidences .92 (right) and .98 (wrong) share bin (0.9, 1]: accuracy .5, confidence .95;
    # .62 and .68 (both right) share (0.6, 0.7]: accuracy 1, confidence .65.
    probs = [[0.92, 0.08], [0.02, 0.98], [0.62, 0.38], [0.32, 0.68]]
    gold = [0, 0, 0, 1]
    scores = cm.classification_scores(gold, probs, ["x", "y"])
    assert scores["ece"] == pytest.approx(0.5 * 0.45 + 0.5 * 0.35)
    bins = scores["reliability"]
    assert len(bins) == 10 and [b["count"] for b in bins] == [0, 0, 0, 0, 0, 0, 2, 0, 0, 2]
    assert (bins[9]["confidence"], bins[9]["accuracy"]) == pytest.approx((0.95, 0.5))
    assert (bins[6]["confidence"], bins[6]["accuracy"]) == pytest.approx((0.65, 1.0))
    assert bins[0] == {"low": 0.0, "high": 0.1, "count": 0, "confidence": None, "accuracy": None}


def test_bins_are_closed_on_the_right():
    bins = cm.reliability_bins([1, 0, 0], [[0.3, 0.7], [0.5, 0.5], [1.0, 0.0]])
    assert [i for i, b in enumerate(bins) if b["count"]] == [4, 6, 9]  # 0.5 -> (.4, .5], 0.7 -> (.6, .7], 1 -> (.9, 1]


def test_a_perfectly_calibrated_set_has_zero_ece():
    # In the (0.7, 0.8] bin, confidence 0.75 and 3 of 4 right.
    probs = [[0.75, 0.25]] * 4
    assert cm.classification_scores([0, 0, 0, 1], probs, ["x", "y"])["ece"] == pytest.approx(0.0)


def test_undefined_auc_is_none_with_a_note():
    gold = [0, 1, 0, 1, 0]  # label 2 never occurs
    probs = [[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.5, 0.2, 0.3], [0.3, 0.3, 0.4], [0.8, 0.1, 0.1]]
    scores = cm.classification_scores(gold, probs, ["a", "b", "c"])
    assert scores["roc_auc"] is None and scores["pr_auc"] is None
    assert scores["notes"] == ["ROC-AUC and PR-AUC undefined: label(s) [2] never occur in the gold labels"]
    assert scores["accuracy"] == pytest.approx(4 / 5)  # only the 4th example (gold b, predicted c) is wrong
    assert scores["per_class"]["c"]["support"] == 0
    binary = cm.classification_scores([1, 1, 1], [[0.2, 0.8], [0.6, 0.4], [0.1, 0.9]], ["n", "p"])
    assert binary["roc_auc"] is None and "[0]" in binary["notes"][0]


def test_bad_probabilities_are_refused():
    with pytest.raises(ValueError, match="softmax"):
        cm.classification_scores([0, 1], [[2.0, -1.0], [0.5, 3.0]], ["x", "y"])
    with pytest.raises(ValueError, match="2 x 3"):
        cm.classification_scores([0, 1], [[0.5, 0.5], [0.5, 0.5]], ["x", "y", "z"])
    with pytest.raises(ValueError, match="0..1"):
        cm.classification_scores([0, 2], [[0.5, 0.5], [0.5, 0.5]], ["x", "y"])


def test_top_confusions_by_hand():
    labels = ["neg", "neu", "pos"]
    rows = [  # (gold, pred, text)
        (2, 0, "p1"), (1, 0, "u1"), (2, 0, "p2"), (0, 2, "n1"), (1, 0, "u2"),
        (2, 0, "p3"), (1, 1, "u3"), (1, 0, "u4"), (0, 0, "n2"), (1, 2, "u5"),
    ]
    gold, pred, texts = zip(*rows)
    found = cm.top_confusions(gold, pred, texts, labels, k=3, examples=2)
    assert found == [
        {"gold": "neu", "predicted": "neg", "count": 3, "examples": ["u1", "u2"]},  # ties: label order
        {"gold": "pos", "predicted": "neg", "count": 3, "examples": ["p1", "p2"]},
        {"gold": "neg", "predicted": "pos", "count": 1, "examples": ["n1"]},
    ]
    assert cm.top_confusions([0, 1], [0, 1], ["a", "b"], ["x", "y"]) == []


def test_reliability_plot_writes_a_png(tmp_path):
    reliability = cm.classification_scores(TRI_GOLD, TRI_PROBS, ["a", "b", "c"])["reliability"]
    path = cm.reliability_plot(reliability, tmp_path / "reliability.png")
    assert path == tmp_path / "reliability.png"
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_roc_auc_interval_by_index_resampling():
    gold, probs = np.array(BIN_GOLD * 3), np.concatenate([BIN_PROBS] * 3)
    low, high, skipped = bootstrap_ci_indices(lambda idx: cm.roc_auc(gold[idx], probs[idx]), len(gold),
                                              resamples=200, seed=0)
    assert low < cm.roc_auc(gold, probs) < high <= 1
    assert skipped == 0
