"""Bootstrap confidence intervals for eval metrics, and paired bootstrap tests between systems.

An eval set is a sample; a metric on it is an estimate. Resampling the examples with
replacement shows how much the number would move on another sample of the same size.

Two kinds of metric are handled:

- **Functions of summed statistics** (:func:`bootstrap_ci`, :func:`paired_bootstrap`):
  each example contributes a row of statistics and the metric is a function of their sum —
  a mean (accuracy, exact match, ROUGE: one column, divided by n) or corpus BLEU/chrF
  (sacrebleu's sufficient statistics). A resample is a row of multinomial counts, so all
  resampled sums come from one matrix product ``counts @ stats``.
- **Anything else** (:func:`bootstrap_ci_indices`, :func:`paired_bootstrap_indices`):
  macro-F1, ROC-AUC. The metric is called on each resample's example indices; resamples
  where it is undefined (ROC-AUC of a resample holding one class) are skipped and counted.

Both kinds draw the same resamples from the same seed, so a mean metric gets the same
interval either way. Intervals are percentile intervals.
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

# At most this many count-matrix entries are held at once (about 32 MB of float64), so a
# large eval set is resampled in chunks instead of one resamples x n matrix.
_CHUNK_ENTRIES = 4_000_000

Aggregate = Callable[[np.ndarray, int], float]


def mean_aggregate(summed: np.ndarray, n: int) -> float:
    """The mean of a one-column statistic: its sum over the resample divided by n."""
    return float(summed[0]) / n


def resample_counts(n: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """The bootstrap resamples as multinomial counts (how often each example is drawn),
    yielded in chunks of rows (``rows x n`` float arrays) that together hold ``resamples``
    rows. Deterministic in (n, resamples, seed)."""
    if n < 1:
        raise ValueError("no examples to resample")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    rng = np.random.default_rng(seed)
    # Rows per chunk depend on n only, so a seed always yields the same resamples.
    rows = max(1, _CHUNK_ENTRIES // n)
    probs = np.full(n, 1.0 / n)
    for start in range(0, resamples, rows):
        yield rng.multinomial(n, probs, size=min(rows, resamples - start)).astype(float)


def _as_stats(per_example) -> np.ndarray:
    stats = np.asarray(per_example, dtype=float)
    if stats.ndim == 1:
        stats = stats[:, None]
    if stats.ndim != 2 or len(stats) == 0:
        raise ValueError(f"per-example statistics must be a non-empty n or n x k array, got shape {stats.shape}")
    return stats


def _resampled_values(stats: np.ndarray, aggregate: Aggregate | None, counts: np.ndarray) -> np.ndarray:
    sums = counts @ stats
    n = len(stats)
    if aggregate is None:
        if stats.shape[1] != 1:
            raise ValueError(f"{stats.shape[1]} statistics per example need an aggregate function")
        return sums[:, 0] / n
    return np.array([aggregate(row, n) for row in sums], dtype=float)


def _full_value(stats: np.ndarray, aggregate: Aggregate | None) -> float:
    return _resampled_values(stats, aggregate, np.ones((1, len(stats))))[0]


def _interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_ci(per_example, aggregate: Aggregate | None = None, resamples: int = 1000, seed: int = 0,
                 confidence: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of a metric that is a function of summed statistics.

    Args:
        per_example: ``n`` per-example values, or an ``n x k`` array of per-example statistics.
        aggregate: ``aggregate(summed_row, n) -> float``, the metric from the statistics summed
            over a resample of n examples. None means the mean of a single column (accuracy,
            exact match, ROUGE); ``text_metrics.bleu_from_stats`` / ``chrf_from_stats`` fit as is.
        resamples, seed: how many resamples, drawn from ``numpy.random.default_rng(seed)``.
        confidence: the interval's coverage, 0.95 for a 95% interval.

    Returns:
        ``(low, high)``.

    Raises:
        ValueError: on an empty set, several columns without ``aggregate``, or a bad confidence.
    """
    stats = _as_stats(per_example)
    values = np.concatenate([_resampled_values(stats, aggregate, counts)
                             for counts in resample_counts(len(stats), resamples, seed)])
    return _interval(values, confidence)


def _index_resamples(n: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Each resample's example indices (sorted), from the same counts as :func:`bootstrap_ci`."""
    positions = np.arange(n)
    for counts in resample_counts(n, resamples, seed):
        for row in counts:
            yield np.repeat(positions, row.astype(int))


def _defined(value) -> bool:
    return value is not None and not np.isnan(value)


def bootstrap_ci_indices(metric_fn: Callable[[np.ndarray], float | None], n: int, resamples: int = 1000,
                         seed: int = 0, confidence: float = 0.95) -> tuple[float | None, float | None, int]:
    """Percentile bootstrap interval of a metric that is not a function of summed statistics.

    Args:
        metric_fn: ``metric_fn(indices) -> float``, the metric on the examples at ``indices``
            (an int array, repeats included); it returns None or NaN where the metric is
            undefined on that resample (ROC-AUC when the resample holds one class).
        n: the number of examples.
        resamples, seed, confidence: as in :func:`bootstrap_ci` (the same seed draws the
            same resamples there and here).

    Returns:
        ``(low, high, skipped)``: the interval over the resamples where the metric is
        defined, and how many were skipped; ``(None, None, resamples)`` when none was.
    """
    values = [metric_fn(indices) for indices in _index_resamples(n, resamples, seed)]
    kept = np.array([v for v in values if _defined(v)], dtype=float)
    skipped = len(values) - len(kept)
    if not len(kept):
        return None, None, skipped
    low, high = _interval(kept, confidence)
    return low, high, skipped


def _paired_result(full_a: float, full_b: float, deltas: np.ndarray, resamples: int) -> dict:
    """Delta b - a, its 95% interval, and the two-sided sign p-value (see paired_bootstrap)."""
    delta = full_b - full_a
    if delta == 0:
        p_value = 1.0
    else:
        # Resamples that do not confirm the observed direction (a tie counts against it).
        disagree = np.mean(deltas * np.sign(delta) <= 0)
        p_value = float(min(1.0, 2 * disagree))
    low, high = _interval(deltas, 0.95)
    return {"a": full_a, "b": full_b, "delta": delta, "ci95": (low, high), "p_value": p_value,
            "resamples": resamples}


def paired_bootstrap(stats_a, stats_b, aggregate: Aggregate | None = None, resamples: int = 1000,
                     seed: int = 0) -> dict:
    """Paired bootstrap comparison of system b against system a on the same examples.

    Both systems are scored on the same resamples, so the per-example pairing (the same
    hard questions in both) is kept and the noise of the test set largely cancels.

    Args:
        stats_a, stats_b: per-example statistics of each system, as in :func:`bootstrap_ci`,
            row i of both belonging to example i.
        aggregate: as in :func:`bootstrap_ci`.

    Returns:
        ``a``, ``b`` (the metric of each on the full set), ``delta`` (b - a), ``ci95`` (the
        percentile interval of the resampled deltas), ``p_value`` and ``resamples``.
        The p-value is a two-sided sign test on the resampled deltas: twice the share of
        resamples whose delta does not have the observed delta's sign (zero included),
        capped at 1; 1 when the observed delta is 0. Its resolution is 2/resamples, so
        0.0 means "below that", not zero. (sacrebleu's ``--paired-bs`` instead shifts the
        resampled |delta| to mean zero and counts those above the observed |delta|.)

    Raises:
        ValueError: when the two systems' statistics differ in shape.
    """
    a, b = _as_stats(stats_a), _as_stats(stats_b)
    if a.shape != b.shape:
        raise ValueError(f"the two systems' statistics differ in shape: {a.shape} vs {b.shape}")
    deltas = np.concatenate([_resampled_values(b, aggregate, counts) - _resampled_values(a, aggregate, counts)
                             for counts in resample_counts(len(a), resamples, seed)])
    return _paired_result(_full_value(a, aggregate), _full_value(b, aggregate), deltas, resamples)


def paired_bootstrap_indices(metric_a: Callable[[np.ndarray], float | None],
                             metric_b: Callable[[np.ndarray], float | None], n: int,
                             resamples: int = 1000, seed: int = 0) -> dict:
    """:func:`paired_bootstrap` for metrics that are not functions of summed statistics.

    ``metric_a(indices)`` and ``metric_b(indices)`` score each system on the same resampled
    example indices (None or NaN where undefined; such resamples are skipped for both).

    Returns:
        The keys of :func:`paired_bootstrap` plus ``skipped``.

    Raises:
        ValueError: when either metric is undefined on the full set or on every resample.
    """
    full = np.arange(n)
    full_a, full_b = metric_a(full), metric_b(full)
    if not (_defined(full_a) and _defined(full_b)):
        raise ValueError("the metric is undefined on the full set")
    deltas, skipped = [], 0
    for indices in _index_resamples(n, resamples, seed):
        value_a, value_b = metric_a(indices), metric_b(indices)
        if _defined(value_a) and _defined(value_b):
            deltas.append(value_b - value_a)
        else:
            skipped += 1
    if not deltas:
        raise ValueError(f"the metric is undefined on all {resamples} resamples")
    result = _paired_result(float(full_a), float(full_b), np.array(deltas), resamples)
    return {**result, "skipped": skipped}
