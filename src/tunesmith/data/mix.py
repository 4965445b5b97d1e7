"""Mix several sources by weight (e.g. domain : general = 1 : 5) into one training set."""

from __future__ import annotations

import random


def mix_sources(sources: list[list[dict]], weights: list[float], total: int, seed: int) -> tuple[list[dict], list[int]]:
    """Sample ``total`` rows so that source i contributes ``total * w_i / sum(w)`` of them.

    A source larger than its share is sampled without replacement; a smaller one is
    repeated whole as often as fits and topped up with a sample (so a small identity set
    can be upweighted against a large general set). Returns (rows, realised counts).
    """
    rng = random.Random(seed)
    exact = [total * w / sum(weights) for w in weights]
    # Largest remainder: round down, then give the leftover rows to the largest fractions.
    # (Rounding each share and fixing up the last one can drive the last count negative.)
    counts = [int(x) for x in exact]
    by_fraction = sorted(range(len(exact)), key=lambda i: exact[i] - counts[i], reverse=True)
    for i in by_fraction[: total - sum(counts)]:
        counts[i] += 1
    mixed: list[dict] = []
    for rows, n in zip(sources, counts):
        repeats, rest = divmod(n, len(rows))
        mixed.extend(rows * repeats)
        mixed.extend(rng.sample(rows, rest))
    rng.shuffle(mixed)
    return mixed, counts
