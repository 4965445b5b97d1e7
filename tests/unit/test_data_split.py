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


def test_time_split_trains_on_the_past_and_evaluates_on_the_future():
    from tunesmith.data.split import split_records

    stamps = ["2024-03-01", "2023-01-05T10:00:00Z", 1_700_000_000, "2024-01-01", "2022-12-31", "2024-06-30",
              "2023-07-01", "2023-11-11", "2024-05-05", "2023-02-02"]
    rows = [{"text": f"r{i}", "label": "a", "ts": ts} for i, ts in enumerate(stamps)]
    train, evaluation, test = split_records(rows, method="time", eval_size=0.2, test_size=0.2, seed=1, time_field="ts")
    assert [r["text"] for r in test] == ["r8", "r5"]  # the two newest
    assert [r["text"] for r in evaluation] == ["r3", "r0"]
    assert len(train) == 6 and "r4" in [r["text"] for r in train]  # the oldest trains


def test_time_split_names_a_row_with_a_bad_timestamp():
    from tunesmith.data.split import time_split

    rows = [{"text": "a", "ts": "2024-01-01"}, {"text": "b", "ts": "last tuesday", "_where": "f.csv line 3"}]
    with pytest.raises(DataError, match="f.csv line 3: field 'ts' value 'last tuesday' is not a time"):
        time_split(rows, "ts", 0.5)


def test_group_split_never_puts_a_group_on_both_sides():
    from tunesmith.data.split import split_records

    rows = [{"text": f"{user}-{k}", "label": "a", "user": user} for user in "abcdefghij" for k in range(5 + "abcdefghij".index(user) % 3)]
    for seed in range(5):
        train, evaluation, test = split_records(rows, method="group", eval_size=0.2, test_size=0.1, seed=seed,
                                                group_field="user")
        sides = [{r["user"] for r in part} for part in (train, evaluation, test)]
        assert not (sides[0] & sides[1]) and not (sides[0] & sides[2]) and not (sides[1] & sides[2])
        assert len(train) + len(evaluation) + len(test) == len(rows)
        assert evaluation and test and len(evaluation) >= 0.2 * len(rows)


def test_pipeline_group_split_with_a_test_set(tmp_path):
    import json

    from tunesmith.config.schema import DataConfig
    from tunesmith.data.pipeline import prepare_data

    rows = [{"text": f"message {i} from {u}", "label": "pos" if i % 2 else "neg", "user": u}
            for u in ("ann", "bob", "cy", "dee", "eve", "fay", "gus", "hal") for i in range(6)]
    rows.append({"text": "no user here", "label": "pos"})
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = DataConfig(train=["d.jsonl"], split_by="group", group_field="user", eval_size=0.25, test_size=0.125,
                     on_error="drop", max_drop_fraction=0.05)
    data = prepare_data(cfg, "classification", seed=3, base_dir=tmp_path)
    users = [{r["user"] for r in part} for part in (data.train, data.eval, data.test)]
    assert users[0].isdisjoint(users[1]) and users[0].isdisjoint(users[2]) and users[1].isdisjoint(users[2])
    assert data.info["split"] == {"method": "group", "train": 30, "eval": 12, "test": 6}
    assert data.rejects[0]["line"] == 49 and data.rejects[0]["fields"] == ["user"]
    with pytest.raises(ValueError, match="needs data.group_field"):
        DataConfig(train=["d.jsonl"], split_by="group")
