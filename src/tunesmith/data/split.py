"""Seeded train/eval splits and subsamples.

Everything here uses its own ``random.Random(seed)`` (never the global RNG, never
``hash()``), so the same records and seed give the same split in every process and on
every machine -- a rerun of a recipe evaluates on exactly the same rows.

Both functions keep the input's relative order inside each output list: the order of
a dataset is left to the trainer's own shuffling, and a split is easy to diff.
"""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import datetime

from tunesmith.errors import DataError


def _eval_count(n: int, eval_size: float | int) -> int:
    if isinstance(eval_size, bool) or not isinstance(eval_size, (int, float)):
        raise DataError(
            f"eval_size must be a number, got {eval_size!r}.",
            "Use a fraction below 1 (e.g. 0.1) or a row count of at least 1 (e.g. 200).",
        )
    if eval_size <= 0:
        raise DataError(
            f"eval_size must be positive, got {eval_size!r}.",
            "Use a fraction below 1 (e.g. 0.1) or a row count of at least 1 (e.g. 200).",
        )
    if eval_size < 1:
        # Round half up (not banker's rounding) so 0.5 rows becomes 1.
        count = int(n * eval_size + 0.5)
        what = f"eval_size {eval_size} of {n} rows"
    else:
        if float(eval_size) != int(eval_size):
            raise DataError(
                f"eval_size {eval_size!r} is neither a fraction below 1 nor a whole row count.",
                "Use e.g. 0.1 for 10% of the rows or 200 for 200 rows.",
            )
        count = int(eval_size)
        what = f"eval_size {count}"
    if count == 0:
        raise DataError(
            f"{what} gives an empty eval set.",
            "Use a larger eval_size, or more data.",
        )
    if count >= n:
        raise DataError(
            f"{what} leaves no rows for training ({n} rows in total).",
            "Use a smaller eval_size, or more data.",
        )
    return count


def _stratified_counts(sizes: dict[str, int], n: int, n_eval: int) -> dict[str, int]:
    """Eval rows per label, proportional to label size, summing exactly to n_eval.

    Largest-remainder rounding: everyone gets floor(quota), then the leftover rows go
    to the labels with the largest fractional parts (ties: bigger label, then name).
    A label is not moved entirely into eval while other labels can still take rows,
    so training sees every label whenever that is possible.
    """
    quotas = {k: n_eval * s / n for k, s in sizes.items()}
    counts = {k: int(q) for k, q in quotas.items()}
    order = sorted(sizes, key=lambda k: (-(quotas[k] - counts[k]), -sizes[k], k))
    for cap_slack in (1, 0):  # first keep >= 1 row of each label in train, then relax
        for k in order:
            if sum(counts.values()) == n_eval:
                return counts
            if counts[k] < sizes[k] - cap_slack and counts[k] < quotas[k] + 1:
                counts[k] += 1
    # Rounding alone could not place every row (tiny labels held back); fill from the
    # biggest labels, which keeps proportions as close as possible.
    for k in sorted(sizes, key=lambda k: (-(sizes[k] - counts[k]), k)):
        while sum(counts.values()) < n_eval and counts[k] < sizes[k] - 1:
            counts[k] += 1
    for k in sorted(sizes, key=lambda k: (-(sizes[k] - counts[k]), k)):
        while sum(counts.values()) < n_eval and counts[k] < sizes[k]:
            counts[k] += 1
    return counts


def train_eval_split(records: list[dict], *, eval_size: float | int, seed: int,
                     stratify_field: str | None = None) -> tuple[list[dict], list[dict]]:
    """Split records into (train, eval).

    eval_size < 1 is a fraction of the rows, >= 1 a row count. With ``stratify_field``
    (e.g. "label") each value keeps its share of the rows in both parts. Raises
    DataError if either part would be empty, or a record lacks the stratify field.
    """
    n = len(records)
    n_eval = _eval_count(n, eval_size)
    rng = random.Random(seed)

    if stratify_field is None:
        indices = list(range(n))
        rng.shuffle(indices)
        eval_idx = set(indices[:n_eval])
    else:
        groups: dict[str, list[int]] = defaultdict(list)
        for i, rec in enumerate(records):
            if stratify_field not in rec:
                raise DataError(
                    f"Record {i} has no {stratify_field!r} field to stratify the split by.",
                    "Stratify only classification data, by its label field.",
                )
            groups[str(rec[stratify_field])].append(i)
        counts = _stratified_counts({k: len(v) for k, v in groups.items()}, n, n_eval)
        eval_idx = set()
        # Sorted label order: the RNG stream is consumed the same way regardless of
        # which label happens to come first in the file.
        for label in sorted(groups):
            members = groups[label][:]
            rng.shuffle(members)
            eval_idx.update(members[: counts[label]])

    train = [r for i, r in enumerate(records) if i not in eval_idx]
    evals = [r for i, r in enumerate(records) if i in eval_idx]
    return train, evals


def subsample(records: list[dict], n: int | None, seed: int) -> list[dict]:
    """A seeded sample of ``n`` records without replacement, in their original order.

    ``n`` None or >= len(records) returns all records, unchanged in order.
    """
    if n is None or n >= len(records):
        return list(records)
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise DataError(f"The sample size must be a positive whole number, got {n!r}.",
                        "Use e.g. 1000, or leave it unset to use every row.")
    picked = sorted(random.Random(seed).sample(range(len(records)), n))
    return [records[i] for i in picked]


def _time_value(record: dict, field: str, index: int) -> float:
    value = record[field]
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(value.strip().replace("Z", "+00:00")).timestamp()
    except ValueError as exc:
        where = record.get("_where", f"row {index + 1}")
        raise DataError(f"{where}: field {field!r} value {value!r} is not a time.",
                        "Use ISO 8601 (2024-05-01 or 2024-05-01T12:00:00Z) or a Unix timestamp.") from exc


def time_split(records: list[dict], field: str, eval_size: float | int,
               test_size: float | int = 0) -> tuple[list[dict], list[dict], list[dict]]:
    """Oldest rows train, the next ones eval, the newest test: the model is judged on the
    future it will meet, never on rows from after its training data."""
    n = len(records)
    n_test = _eval_count(n, test_size) if test_size else 0
    n_eval = _eval_count(n - n_test, eval_size)
    order = sorted(range(n), key=lambda i: (_time_value(records[i], field, i), i))
    train_end, eval_end = n - n_eval - n_test, n - n_test
    pick = lambda idx: [records[i] for i in idx]  # noqa: E731
    return pick(order[:train_end]), pick(order[train_end:eval_end]), pick(order[eval_end:])


def group_split(records: list[dict], field: str, eval_size: float | int, seed: int,
                test_size: float | int = 0) -> tuple[list[dict], list[dict], list[dict]]:
    """Whole groups (a user, a document) go to one side, so no group is seen in training
    and then scored in eval. Groups are shuffled with ``seed`` and dealt to test, then
    eval, until each reaches its share of rows."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, rec in enumerate(records):
        groups[str(rec[field])].append(i)
    if len(groups) < 2 + bool(test_size):
        raise DataError(f"Splitting by {field!r} needs at least {2 + bool(test_size)} groups; the data has {len(groups)}.",
                        "Split by another field, or randomly.")
    names = sorted(groups)
    random.Random(seed).shuffle(names)
    n = len(records)
    targets = [(_eval_count(n, test_size) if test_size else 0), _eval_count(n, eval_size)]
    parts: list[list[int]] = [[], [], []]  # test, eval, train
    slot = 0
    for name in names:
        while slot < 2 and len(parts[slot]) >= targets[slot]:
            slot += 1
        # Never deal the last group away from train.
        parts[slot if name != names[-1] or slot == 2 else 2].extend(groups[name])
    test, evaluation, train = ([records[i] for i in sorted(p)] for p in parts)
    if not evaluation or not train:
        raise DataError(f"Splitting by {field!r} left an empty part (the largest group holds most rows).",
                        "Use a smaller eval_size, or split by another field.")
    return train, evaluation, test


def split_records(records: list[dict], *, method: str, eval_size: float | int, test_size: float | int, seed: int,
                  stratify_field: str | None = None, time_field: str | None = None,
                  group_field: str | None = None) -> tuple[list[dict], list[dict], list[dict]]:
    """(train, eval, test) by ``method``: random, stratified (by ``stratify_field``), time or group."""
    if method == "time":
        return time_split(records, time_field, eval_size, test_size)
    if method == "group":
        return group_split(records, group_field, eval_size, seed, test_size)
    field = stratify_field if method == "stratified" else None
    test: list[dict] = []
    if test_size:
        records, test = train_eval_split(records, eval_size=test_size, seed=seed + 7, stratify_field=field)
    train, evaluation = train_eval_split(records, eval_size=eval_size, seed=seed, stratify_field=field)
    return train, evaluation, test
