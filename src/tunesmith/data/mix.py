"""Mix several sources by weight (e.g. domain : general = 1 : 5) into one training set."""

from __future__ import annotations

import random


def mix_sources(sources: list[list[dict]], weights: list[float], total: int, seed: int,
                with_replacement: bool = False) -> tuple[list[dict], list[int]]:
    """Sample ``total`` rows so that source i contributes ``total * w_i / sum(w)`` of them.

    Without replacement (default), a source larger than its share is sampled without
    replacement; a smaller one is repeated whole as often as fits and topped up with a
    sample (so a small identity set can be upweighted against a large general set, and
    no row is seen twice more often than another). With replacement, each row is drawn
    independently. Returns (rows, realised counts).
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
        if with_replacement:
            mixed.extend(rng.choices(rows, k=n))
            continue
        repeats, rest = divmod(n, len(rows))
        mixed.extend(rows * repeats)
        mixed.extend(rng.sample(rows, rest))
    rng.shuffle(mixed)
    return mixed, counts
