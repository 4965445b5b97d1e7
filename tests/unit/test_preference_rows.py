"""Preference rows in four forms: validated row by row, counted by reason, turned into pairs."""

from __future__ import annotations

import json

import pytest

from tunesmith.config.schema import DataConfig
from tunesmith.data.pipeline import prepare_data
from tunesmith.data.preference_rows import pairs_from_ranking, pairs_from_ratings
from tunesmith.errors import DataError

ROWS = [
    {"prompt": "review it", "chosen": "great", "rejected": "awful"},                 # 1 a pair
    {"prompt": "review it", "chosen": "same", "rejected": "same"},                   # 2 chosen == rejected
    {"prompt": "review it", "completion": "", "label": True},                        # 3 empty completion
    {"prompt": "review it", "completion": "fine", "label": "maybe"},                 # 4 label not a verdict
    {"prompt": "review it", "completion": "fine", "label": True},                    # 5 a thumbs up
    {"prompt": "rank these", "responses": ["best", "middle", "worst"]},              # 6 a ranked list: 3 pairs
    {"prompt": "rank these", "responses": ["only", "only"]},                         # 7 nothing to rank
    {"prompt": "rate it", "response": "superb", "score": 5},                         # 8 ratings
    {"prompt": "rate it", "response": "decent", "score": 3},                         # 9
    {"prompt": "rate it", "response": "so-so", "score": 2.5},                        # 10
    {"prompt": "rate it", "response": "dreadful", "score": "low"},                   # 11 score not a number
    {"chosen": "good", "rejected": "bad"},                                           # 12 no prompt
]


def test_every_form_is_validated_and_bad_rows_are_counted_by_reason(tmp_path):
    path = tmp_path / "prefs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
    cfg = DataConfig(train=[str(path)], eval_size=1, on_error="drop", max_drop_fraction=0.9, min_gap=1.0)
    data = prepare_data(cfg, "preference", seed=0)
    validation = data.info["validation"]
    assert validation["rows_read"] == 12 and validation["valid"] == 6
    assert validation["by_reason"] == {"same_answers": 1, "empty_field": 1, "wrong_type": 2, "invalid": 1,
                                       "missing_field": 1}
    assert sorted(r["line"] for r in data.rejects) == [2, 3, 4, 7, 11, 12]
    rows = data.train + data.eval
    made = data.info["pairs_made"][str(path)]
    assert made == {"ranked_lists": 1, "ratings": 3, "pairs_from_rankings": 3, "pairs_from_ratings": 1}
    # 1 pair + 1 thumbs up + 3 ranked pairs + 1 rated pair (superb over decent or so-so; no gap >= 1 else).
    assert len(rows) == 6
    rated = [r for r in rows if r["prompt"] == "rate it"]
    assert len(rated) == 1 and rated[0]["chosen"] == "superb" and rated[0]["rejected"] in ("decent", "so-so")


def test_a_ranked_list_gives_every_better_worse_two():
    pairs = pairs_from_ranking({"prompt": "p", "responses": ["a", "b", "c", "d"]})
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [
        ("a", "b"), ("a", "c"), ("a", "d"), ("b", "c"), ("b", "d"), ("c", "d")]


def test_ratings_pair_within_a_prompt_above_the_gap_and_stay_linear_in_size():
    rows = [{"prompt": f"prompt {i % 3}", "response": f"answer {i}", "score": float(i % 7)} for i in range(3000)]
    pairs = pairs_from_ratings(rows, min_gap=2.0)
    assert len(pairs) <= len(rows)
    scores = {(r["prompt"], r["response"]): r["score"] for r in rows}
    for p in pairs:
        assert scores[(p["prompt"], p["chosen"])] - scores[(p["prompt"], p["rejected"])] >= 2.0
    # Every answer with something at least 2 below it in its own prompt is chosen once.
    assert len(pairs) == sum(1 for r in rows if r["score"] >= 2)
    assert pairs_from_ratings(rows, min_gap=2.0) == pairs  # the same pairs on every run


def test_a_reward_model_given_thumbs_up_rows_names_the_row(tiny_llama_dir):
    from transformers import AutoTokenizer

    from tunesmith.objectives.reward import RewardObjective

    objective = RewardObjective(AutoTokenizer.from_pretrained(tiny_llama_dir), 64)
    with pytest.raises(DataError, match="votes.jsonl line 4 is an unpaired"):
        objective.encode([{"prompt": "p", "completion": "c", "label": False, "_where": "votes.jsonl line 4"}])
