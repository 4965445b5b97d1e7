"""Weighted mixing of training sources."""

from __future__ import annotations

from collections import Counter

from tunesmith.data.mix import mix_sources


def _source(name: str, n: int) -> list[dict]:
    return [{"src": name, "i": i} for i in range(n)]


def test_realised_counts_follow_weights():
    domain, general = _source("domain", 400), _source("general", 2000)
    rows, counts = mix_sources([domain, general], [1, 5], total=600, seed=0)
    assert counts == [100, 500]
    assert len(rows) == 600
    assert Counter(r["src"] for r in rows) == {"domain": 100, "general": 500}
    # large sources are sampled without replacement
    assert len({r["i"] for r in rows if r["src"] == "domain"}) == 100
    assert len({r["i"] for r in rows if r["src"] == "general"}) == 500


def test_small_source_is_repeated_to_reach_its_share():
    identity, general = _source("identity", 30), _source("general", 2000)
    rows, counts = mix_sources([identity, general], [1, 5], total=600, seed=0)
    assert counts == [100, 500]
    seen = Counter(r["i"] for r in rows if r["src"] == "identity")
    assert sum(seen.values()) == 100
    assert set(seen) == set(range(30))  # every row appears (repeated whole 3 times) ...
    assert sorted(Counter(seen.values()).items()) == [(3, 20), (4, 10)]  # ... and 10 get a 4th copy


def test_rows_are_shuffled_across_sources():
    rows, _ = mix_sources([_source("a", 50), _source("b", 50)], [1, 1], total=100, seed=0)
    first_half = Counter(r["src"] for r in rows[:50])
    assert 0 < first_half["a"] < 50


def test_same_seed_same_mix_other_seed_other_mix():
    sources = [_source("a", 40), _source("b", 500)]
    first, _ = mix_sources(sources, [1, 3], total=200, seed=7)
    again, _ = mix_sources(sources, [1, 3], total=200, seed=7)
    other, _ = mix_sources(sources, [1, 3], total=200, seed=8)
    assert first == again
    assert first != other


def test_total_preserved_under_rounding():
    sources = [_source(str(k), 20) for k in range(3)]
    rows, counts = mix_sources(sources, [1, 1, 1], total=100, seed=0)
    assert sum(counts) == 100 == len(rows)
    assert sorted(counts) == [33, 33, 34]


def test_counts_never_negative_and_within_one_of_exact_share():
    # Four shares of 1.746 each would round up to 2 and leave -1 for the last source.
    weights = [1, 1, 1, 1, 0.01]
    sources = [_source(str(k), 20) for k in range(5)]
    rows, counts = mix_sources(sources, weights, total=7, seed=0)
    assert sum(counts) == 7 == len(rows)
    assert all(c >= 0 for c in counts)
    for c, w in zip(counts, weights):
        assert abs(c - 7 * w / sum(weights)) < 1
    assert Counter(r["src"] for r in rows) == {str(k): c for k, c in enumerate(counts) if c}


def test_mixing_with_replacement_draws_independently_and_reports_unique_rows(tmp_path):
    import json

    from tunesmith.config.schema import DataConfig
    from tunesmith.data.pipeline import prepare_data

    (tmp_path / "domain.jsonl").write_text("".join(
        json.dumps({"messages": [{"role": "user", "content": f"d{i}"}, {"role": "assistant", "content": "x"}]}) + "\n"
        for i in range(10)))
    (tmp_path / "general.jsonl").write_text("".join(
        json.dumps({"messages": [{"role": "user", "content": f"g{i}"}, {"role": "assistant", "content": "y"}]}) + "\n"
        for i in range(100)))
    base = {"train": [{"path": "domain.jsonl", "weight": 1}, {"path": "general.jsonl", "weight": 5}],
            "eval_size": 0.1, "mix_total": 60}
    repeat = prepare_data(DataConfig(**base), "chat", seed=4, base_dir=tmp_path)
    assert repeat.info["mix"] == {"domain.jsonl": 10, "general.jsonl": 50}
    assert repeat.info["mix_unique_rows"] == {"domain.jsonl": 9, "general.jsonl": 50}  # 9 train rows, repeated
    drawn = prepare_data(DataConfig(**base, mix_with_replacement=True), "chat", seed=4, base_dir=tmp_path)
    assert drawn.info["mix"] == repeat.info["mix"]
    assert drawn.info["mix_unique_rows"]["general.jsonl"] < 50  # duplicates among 50 draws from 90
