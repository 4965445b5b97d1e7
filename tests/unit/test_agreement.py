"""tunesmith.eval.agreement: the Wilson interval, Cohen's and Fleiss' kappa, pinned to
hand computations, scikit-learn and the worked example of Fleiss (1971)."""

from __future__ import annotations

import math

import pytest
from sklearn.metrics import cohen_kappa_score

from tunesmith.eval.agreement import cohen_kappa, fleiss_kappa, wilson_interval

# Wikipedia, "Fleiss' kappa", worked example: 10 subjects, 5 categories, 14 raters each.
FLEISS_EXAMPLE = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]


def test_wilson_interval_matches_a_hand_computation():
    # 8 of 10 at 95% (z = 1.959964): centre (0.8 + z²/20) / (1 + z²/10) = 0.71675,
    # half-width z·sqrt(0.8·0.2/10 + z²/400) / (1 + z²/10) = 0.22658.
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    assert round(low, 3) == 0.490 and round(high, 3) == 0.943


def test_wilson_interval_edges_and_confidence():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(0, 5)
    assert low == 0.0 and 0 < high < 1
    low, high = wilson_interval(5, 5)
    assert 0 < low < 1 and high == 1.0
    narrow, wide = wilson_interval(8, 10, 0.90), wilson_interval(8, 10, 0.99)
    assert wide[0] < narrow[0] and wide[1] > narrow[1]
    assert wilson_interval(7.5, 10)[0] < wilson_interval(8, 10)[0]  # fractional successes (ties as half)
    for bad in [(11, 10), (-1, 10), (1, -1)]:
        with pytest.raises(ValueError):
            wilson_interval(*bad)
    with pytest.raises(ValueError):
        wilson_interval(1, 2, confidence=1.0)


@pytest.mark.parametrize("a, b", [
    (["A", "B", "A", "tie", "B", "A", "both_bad", "B"], ["A", "B", "B", "tie", "B", "A", "tie", "A"]),
    ([1, 1, 2, 2, 3, 3, 1, 2, 3, 1], [1, 2, 2, 2, 3, 1, 1, 2, 3, 3]),
    (["B"] * 9 + ["A"], ["B"] * 8 + ["A", "A"]),          # skewed marginals
    (["A", "B", "A", "B"], ["B", "A", "B", "A"]),           # worse than chance
    (["A", "B", "tie"], ["A", "B", "tie"]),                 # perfect
    (["x", "y", "x", "y", "x"], ["x", "x", "x", "z", "x"]),  # a label only one rater used
])
def test_cohen_kappa_equals_scikit_learn(a, b):
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b), abs=1e-9)


def test_cohen_kappa_is_undefined_when_both_raters_use_one_label():
    assert math.isnan(cohen_kappa(["B", "B", "B"], ["B", "B", "B"]))
    with pytest.raises(ValueError):
        cohen_kappa(["A"], ["A", "B"])
    with pytest.raises(ValueError):
        cohen_kappa([], [])


def test_fleiss_kappa_equals_the_worked_example_of_fleiss_1971():
    # Wikipedia gives P̄ = 0.378, P̄e = 0.213 and κ = 0.210 for this table.
    assert fleiss_kappa(FLEISS_EXAMPLE) == pytest.approx(0.210, abs=5e-4)


def test_fleiss_kappa_edges():
    assert fleiss_kappa([[3, 0], [0, 3], [3, 0]]) == pytest.approx(1.0)
    assert math.isnan(fleiss_kappa([[3, 0], [3, 0]]))  # one category only: chance agreement is 1
    # Two raters: Fleiss' kappa is Scott's pi, which equals Cohen's kappa when marginals match.
    assert fleiss_kappa([[2, 0], [0, 2], [1, 1], [1, 1]]) == pytest.approx(
        cohen_kappa_score(["a", "b", "a", "b"], ["a", "b", "b", "a"]))
    for bad in ([], [[2, 1], [1, 1]], [[1, 0], [0, 1]], [[2, 0], [2]], [[3, -1], [1, 1]]):
        with pytest.raises(ValueError):
            fleiss_kappa(bad)
