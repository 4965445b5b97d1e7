"""Seeded train/eval splits and subsamples."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tunesmith.data.split import subsample, train_eval_split
from tunesmith.errors import DataError

SRC = Path(__file__).resolve().parents[2] / "src"


def _records(n_pos: int = 70, n_neg: int = 30) -> list[dict]:
    return ([{"text": f"p{i}", "label": "positive"} for i in range(n_pos)]
            + [{"text": f"n{i}", "label": "negative"} for i in range(n_neg)])


def _texts(recs):
    return [r["text"] for r in recs]


def test_fraction_sizes_no_overlap_and_order_kept():
    recs = _records()
    train, ev = train_eval_split(recs, eval_size=0.2, seed=1)
    assert (len(train), len(ev)) == (80, 20)
    assert not set(_texts(train)) & set(_texts(ev))
    assert sorted(_texts(train) + _texts(ev)) == sorted(_texts(recs))
    order = {t: i for i, t in enumerate(_texts(recs))}
    assert [order[t] for t in _texts(train)] == sorted(order[t] for t in _texts(train))


def test_count_eval_size():
    train, ev = train_eval_split(_records(), eval_size=7, seed=0)
    assert (len(train), len(ev)) == (93, 7)


def test_same_seed_same_split_other_seed_differs():
    recs = _records()
    a = train_eval_split(recs, eval_size=0.2, seed=3)
    assert a == train_eval_split(recs, eval_size=0.2, seed=3)
    assert _texts(a[1]) != _texts(train_eval_split(recs, eval_size=0.2, seed=4)[1])


def test_split_is_identical_in_another_process():
    code = ("import sys; from tunesmith.data.split import train_eval_split;"
            "recs=[{'text': str(i), 'label': str(i % 3)} for i in range(50)];"
            "print(','.join(r['text'] for r in train_eval_split(recs, eval_size=0.2, seed=5,"
            " stratify_field='label')[1]))")
    outs = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env={"PYTHONPATH": str(SRC), "PYTHONHASHSEED": seed}).stdout
        for seed in ("1", "2")
    }
    recs = [{"text": str(i), "label": str(i % 3)} for i in range(50)]
    here = ",".join(_texts(train_eval_split(recs, eval_size=0.2, seed=5, stratify_field="label")[1]))
    assert outs == {here + "\n"}


def test_stratified_keeps_proportions():
    recs = _records(700, 300)
    train, ev = train_eval_split(recs, eval_size=0.1, seed=0, stratify_field="label")
    assert Counter(r["label"] for r in ev) == {"positive": 70, "negative": 30}
    assert Counter(r["label"] for r in train) == {"positive": 630, "negative": 270}


def test_stratified_rounding_sums_to_requested_size():
    recs = ([{"text": f"a{i}", "label": "a"} for i in range(5)]
            + [{"text": f"b{i}", "label": "b"} for i in range(5)]
            + [{"text": f"c{i}", "label": "c"} for i in range(5)])
    train, ev = train_eval_split(recs, eval_size=4, seed=0, stratify_field="label")
    assert len(ev) == 4 and len(train) == 11
    assert sorted(Counter(r["label"] for r in ev).values()) == [1, 1, 2]


def test_stratified_keeps_rare_label_in_train():
    recs = _records(20, 0) + [{"text": "rare", "label": "rare"}]
    train, ev = train_eval_split(recs, eval_size=0.5, seed=0, stratify_field="label")
    assert "rare" in _texts(train)
    assert len(ev) == 11


def test_stratify_field_missing():
    with pytest.raises(DataError, match="'label'"):
        train_eval_split([{"text": "a"}, {"text": "b"}], eval_size=1, seed=0, stratify_field="label")


@pytest.mark.parametrize("eval_size, match", [
    (0.001, "empty eval"), (100, "no rows for training"), (500, "no rows for training"),
    (0, "positive"), (-0.1, "positive"), (2.5, "whole row count"),
])
def test_bad_eval_sizes(eval_size, match):
    with pytest.raises(DataError, match=match):
        train_eval_split(_records(), eval_size=eval_size, seed=0)


def test_subsample():
    recs = _records()
    assert subsample(recs, None, 0) == recs
    assert subsample(recs, 1000, 0) == recs
    part = subsample(recs, 10, seed=7)
    assert len(part) == 10 and len(set(_texts(part))) == 10
    assert part == subsample(recs, 10, seed=7)
    assert part != subsample(recs, 10, seed=8)
    order = {t: i for i, t in enumerate(_texts(recs))}
    assert [order[t] for t in _texts(part)] == sorted(order[t] for t in _texts(part))
    with pytest.raises(DataError):
        subsample(recs, 0, 0)
