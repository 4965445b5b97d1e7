"""Bootstrap intervals: coverage on data with a known answer, paired tests on identical and
clearly different systems, determinism, and the two resampling paths agreeing."""

from __future__ import annotations

import numpy as np
import pytest

from tunesmith.eval import bootstrap as bs
from tunesmith.eval.text_metrics import bleu_from_stats, bleu_stats


def bernoulli(n: int, p: float, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random(n) < p).astype(float)


def test_95_percent_interval_covers_the_true_mean_about_95_percent_of_the_time():
    p, trials = 0.7, 200
    covered = 0
    for seed in range(trials):
        low, high = bs.bootstrap_ci(bernoulli(200, p, 10_000 + seed), resamples=500, seed=seed)
        covered += low <= p <= high
    assert 0.90 <= covered / trials <= 0.99


def test_interval_width_matches_the_normal_approximation():
    values = bernoulli(400, 0.5, 1)
    low, high = bs.bootstrap_ci(values, resamples=2000, seed=3)
    mean = values.mean()
    half = 1.96 * np.sqrt(mean * (1 - mean) / len(values))  # about 0.049
    assert low < mean < high
    assert (high - low) / 2 == pytest.approx(half, rel=0.1)


def test_same_seed_same_interval_other_seed_other_interval():
    values = bernoulli(150, 0.6, 2)
    assert bs.bootstrap_ci(values, seed=7) == bs.bootstrap_ci(values, seed=7)
    assert bs.bootstrap_ci(values, seed=7) != bs.bootstrap_ci(values, seed=8)


def test_chunked_resampling_draws_the_same_resamples(monkeypatch):
    values = bernoulli(100, 0.4, 4)
    whole = bs.bootstrap_ci(values, resamples=300, seed=5)
    monkeypatch.setattr(bs, "_CHUNK_ENTRIES", 700)  # 7 rows per chunk
    assert len(list(bs.resample_counts(100, 300, 5))) == 43
    assert bs.bootstrap_ci(values, resamples=300, seed=5) == whole


def test_counts_are_resamples_of_n_examples():
    (counts,) = list(bs.resample_counts(30, 50, seed=0))
    assert counts.shape == (50, 30)
    assert np.all(counts.sum(axis=1) == 30)


def test_summed_statistics_aggregate_bleu():
    preds = ["the cat sat on the mat", "a dog ran in the park", "it is raining today", "hello there my friend"]
    refs = ["the cat sat on a mat", "the dog ran in the park", "it rains today", "hello my good friend"]
    stats = bleu_stats(preds, refs)
    low, high = bs.bootstrap_ci(stats, bleu_from_stats, resamples=200, seed=0)
    full = bleu_from_stats(stats.sum(axis=0))
    assert 0 <= low < full < high <= 100


def test_mean_over_indices_equals_mean_over_counts():
    values = bernoulli(80, 0.3, 6)
    by_counts = bs.bootstrap_ci(values, resamples=300, seed=9)
    low, high, skipped = bs.bootstrap_ci_indices(lambda idx: values[idx].mean(), len(values), resamples=300, seed=9)
    assert (low, high) == pytest.approx(by_counts, abs=1e-12)
    assert skipped == 0


def test_undefined_resamples_are_skipped_and_counted():
    # One positive in 20: about (19/20)^20 = 36% of resamples miss it.
    gold = np.array([1] + [0] * 19)

    def only_if_both_classes(idx):
        return None if len(set(gold[idx])) < 2 else float(gold[idx].mean())

    low, high, skipped = bs.bootstrap_ci_indices(only_if_both_classes, 20, resamples=500, seed=0)
    assert 0.25 * 500 < skipped < 0.47 * 500
    assert 0 < low <= high
    assert bs.bootstrap_ci_indices(lambda idx: float("nan"), 20, resamples=10) == (None, None, 10)


def test_several_columns_need_an_aggregate():
    with pytest.raises(ValueError, match="need an aggregate"):
        bs.bootstrap_ci(np.ones((5, 2)))
    with pytest.raises(ValueError, match="non-empty"):
        bs.bootstrap_ci([])
    with pytest.raises(ValueError, match="confidence"):
        bs.bootstrap_ci([1.0, 0.0], confidence=95)


def test_paired_bootstrap_of_identical_systems_finds_nothing():
    values = bernoulli(100, 0.6, 11)
    result = bs.paired_bootstrap(values, values.copy(), resamples=300)
    assert result["delta"] == 0
    assert result["ci95"] == (0.0, 0.0)
    assert result["p_value"] == 1.0


def test_paired_bootstrap_of_clearly_different_systems():
    a = bernoulli(300, 0.55, 12)
    b = np.maximum(a, bernoulli(300, 0.3, 13))  # b fixes some of a's mistakes, breaks none
    result = bs.paired_bootstrap(a, b, resamples=1000, seed=1)
    assert result["delta"] == pytest.approx(b.mean() - a.mean())
    assert result["delta"] > 0.1
    assert result["ci95"][0] > 0
    assert result["p_value"] < 0.01
    # Swapping the systems flips the sign, not the evidence.
    swapped = bs.paired_bootstrap(b, a, resamples=1000, seed=1)
    assert swapped["delta"] == pytest.approx(-result["delta"])
    assert swapped["ci95"][1] < 0
    assert swapped["p_value"] == result["p_value"]


def test_paired_bootstrap_of_a_noise_difference_is_not_significant():
    a = np.array([1.0] * 60 + [0.0] * 40)
    b = a.copy()
    b[[0, 1, 2]] = 0.0  # three regressions
    b[[60, 61, 62, 63]] = 1.0  # four fixes: delta 0.01
    result = bs.paired_bootstrap(a, b, resamples=500)
    assert result["delta"] == pytest.approx(0.01)
    assert result["ci95"][0] < 0 < result["ci95"][1]
    assert result["p_value"] > 0.05


def test_paired_bootstrap_p_value_is_the_doubled_share_of_disagreeing_resamples():
    a, b = bernoulli(60, 0.5, 30), bernoulli(60, 0.6, 31)
    result = bs.paired_bootstrap(a, b, resamples=400, seed=2)
    (counts,) = list(bs.resample_counts(60, 400, 2))
    deltas = (counts @ b - counts @ a) / 60
    sign = np.sign(result["delta"])
    assert result["p_value"] == pytest.approx(min(1.0, 2 * np.mean(deltas * sign <= 0)))
    assert result["ci95"] == pytest.approx(tuple(np.percentile(deltas, [2.5, 97.5])))


def test_paired_bootstrap_by_indices_agrees_with_counts_for_a_mean():
    a, b = bernoulli(90, 0.5, 40), bernoulli(90, 0.7, 41)
    by_counts = bs.paired_bootstrap(a, b, resamples=300, seed=4)
    by_indices = bs.paired_bootstrap_indices(lambda idx: a[idx].mean(), lambda idx: b[idx].mean(), 90,
                                             resamples=300, seed=4)
    assert by_indices["delta"] == pytest.approx(by_counts["delta"])
    assert by_indices["ci95"] == pytest.approx(by_counts["ci95"])
    assert by_indices["p_value"] == pytest.approx(by_counts["p_value"])
    assert by_indices["skipped"] == 0


def test_paired_bootstrap_rejects_mismatched_systems():
    with pytest.raises(ValueError, match="differ in shape"):
        bs.paired_bootstrap(np.ones(5), np.ones(6))
