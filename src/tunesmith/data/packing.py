"""Packing short tokenized chats into rows of up to ``max_length`` tokens.

Each packed row carries ``position_ids`` that restart at 0 for every example. Given
position ids and no attention mask (and no cache), transformers 5 builds a block-diagonal
causal mask from them, so a token attends only to earlier tokens of its own example:
no cross-contamination, and the packed loss equals the unpacked loss (tested). The first
label of every example is masked, so no example is trained to predict the next one.
"""

from __future__ import annotations

from tunesmith.data.template import IGNORE_INDEX


def pack_features(features: list[dict], max_length: int) -> list[dict]:
    """First-fit-decreasing packing; every example lands whole in exactly one row.

    Returns rows ``{"input_ids", "labels", "position_ids", "num_examples"}``.
    """
    order = sorted(range(len(features)), key=lambda i: -len(features[i]["input_ids"]))
    rows: list[dict] = []
    free: list[int] = []  # room left in each row
    for i in order:
        n = len(features[i]["input_ids"])
        slot = next((k for k, room in enumerate(free) if room >= n), None)
        if slot is None:
            rows.append(_empty_row())
            free.append(max_length)
            slot = len(rows) - 1
        _append(rows[slot], features[i])
        free[slot] -= n
    return rows


def concatenate(features: list[dict]) -> dict:
    """One row holding ``features`` back to back, as ``pack_features`` builds them.

    Used for padding-free batches: a micro-batch becomes a single row, so no slot is
    padding. Features may be packed rows themselves (their position ids already restart).
    """
    row = _empty_row()
    for feature in features:
        _append(row, feature)
    return row


def _empty_row() -> dict:
    return {"input_ids": [], "labels": [], "position_ids": [], "num_examples": 0}


def _append(row: dict, feature: dict) -> None:
    """Add one example (or packed row) to ``row``; its first label is masked so no
    example is trained to predict the one before it."""
    n = len(feature["input_ids"])
    row["input_ids"] += feature["input_ids"]
    row["labels"] += [IGNORE_INDEX] + list(feature["labels"][1:])
    row["position_ids"] += list(feature.get("position_ids", range(n)))
    row["num_examples"] += feature.get("num_examples", 1)


def packing_efficiency(features: list[dict], rows: list[dict], max_length: int) -> dict:
    """How much padding packing saved: real tokens over padded slots, before and after."""
    tokens = sum(len(f["input_ids"]) for f in features)
    return {"examples": len(features), "rows": len(rows), "tokens": tokens,
            "fill": round(tokens / max(1, len(rows) * max_length), 4)}
