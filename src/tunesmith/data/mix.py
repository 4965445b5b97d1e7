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
    shares = [w / sum(weights) for w in weights]
    counts = [round(total * s) for s in shares]
    counts[-1] = total - sum(counts[:-1])  # rounding must not change the total
    mixed: list[dict] = []
    for rows, n in zip(sources, counts):
        repeats, rest = divmod(n, len(rows))
        mixed.extend(rows * repeats)
        mixed.extend(rng.sample(rows, rest))
    rng.shuffle(mixed)
    return mixed, counts
