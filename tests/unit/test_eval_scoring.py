"""The pieces around the metrics: classification bootstrap functions, the scorecard, the
forgetting report, and generation scoring re-computed from saved predictions."""

from __future__ import annotations

import numpy as np
import pytest

from tunesmith.eval.class_metrics import classification_scores
from tunesmith.eval.classify import CLASSIFICATION_METRICS, metric_functions
from tunesmith.eval.forgetting import forgetting_report, general_probe_rows
from tunesmith.eval.generation import chat_items, paired_deltas, score_predictions
from tunesmith.eval.scorecard import build_scorecard, format_scorecard, human_scores
from tunesmith.eval import text_metrics


@pytest.mark.parametrize("classes", [2, 3])
def test_bootstrap_metric_functions_equal_sklearn_on_the_full_set(classes):
    rng = np.random.default_rng(classes)
    gold = rng.integers(0, classes, 120)
    logits = rng.normal(size=(120, classes)) + np.eye(classes)[gold] * 1.2
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    reference = classification_scores(gold, probs, [f"c{i}" for i in range(classes)])
    functions = metric_functions(gold, probs)
    assert set(functions) == set(CLASSIFICATION_METRICS)
    for name, fn in functions.items():
        assert fn(np.arange(120)) == pytest.approx(reference[name], abs=1e-9), name


def test_scorecard_signs_changes_so_positive_is_better_and_skips_rows_without_baseline():
    card = build_scorecard({"task": (0.80, 0.88), "time": (100.0, 50.0), "memory": (None, 900.0)},
                           {"task": 3, "time": 1, "memory": 1})
    rows = {r["dimension"]: r for r in card["rows"]}
    assert rows["task"]["change"] == pytest.approx(0.10)
    assert rows["time"]["change"] == pytest.approx(0.50)  # half the time is an improvement
    assert rows["memory"]["change"] is None and rows["memory"]["weighted"] is None
    assert card["total"] == pytest.approx((3 * 0.10 + 1 * 0.50) / 4)
    # a loss-like task metric: lower is better
    loss = build_scorecard({"task": (2.0, 1.5)}, task_higher_is_better=False)
    assert loss["rows"][0]["change"] == pytest.approx(0.25)
    assert "**+20.0%**" in format_scorecard(card)


def test_human_scores_are_mean_ratings_per_system():
    review = {"systems": {"A": {"ratings": {"accuracy": {"mean": 3.0, "n": 2}, "fluency": {"mean": 4.0, "n": 2}}},
                          "B": {"ratings": {"accuracy": {"mean": 5.0, "n": 2}, "fluency": {"mean": None, "n": 0}}}}}
    assert human_scores(review) == (3.5, 5.0)


def test_scorecard_weights_must_name_known_dimensions():
    from pydantic import ValidationError

    from tunesmith.config.schema import EvalConfig

    with pytest.raises(ValidationError, match="unknown scorecard dimension 'speed'"):
        EvalConfig(scorecard={"speed": 1})


def _metrics(chrf, perplexity):
    return {"chrf": {"value": chrf}, "perplexity": {"value": perplexity}}


def test_forgetting_warns_past_the_threshold_and_points_at_mixing():
    calm = forgetting_report(_metrics(40.0, 10.0), _metrics(38.0, 10.5), threshold=0.1)
    assert "warning" not in calm and calm["metrics"]["chrf"]["relative"] == pytest.approx(-0.05)
    dropped = forgetting_report(_metrics(40.0, 10.0), _metrics(30.0, 10.0), threshold=0.1)
    assert "chrf 40 -> 30 (-25%)" in dropped["warning"] and "1:5 to 1:10" in dropped["warning"]
    confused = forgetting_report(_metrics(40.0, 10.0), _metrics(40.0, 12.0), threshold=0.1)
    assert "perplexity" in confused["warning"]


def test_general_questions_seen_in_training_are_left_out():
    rows, excluded = general_probe_rows()
    assert (len(rows), excluded) == (100, 0)
    question = rows[3]["messages"][0]["content"]
    train = [{"messages": [{"role": "user", "content": "  " + question.upper()}, {"role": "assistant", "content": "x"}]}]
    kept, excluded = general_probe_rows(train)
    assert excluded == 1 and question not in [r["messages"][0]["content"] for r in kept]


def _prediction(i, pred, ref):
    return {"id": str(i), "prompt": "q", "reference": ref, "prediction": pred, "tokens": 3,
            "scores": text_metrics.per_example_scores(pred, ref), "reference_nll": 2.0 + i, "reference_tokens": 4}


def test_saved_predictions_rescore_to_corpus_metrics_with_intervals():
    pairs = [("the cat sat on the mat", "the cat sat on the mat"), ("a dog ran", "the dog ran far"),
             ("我是一个助手", "我是人工智能助手"), ("", "paris"), ("paris", "Paris.")]
    predictions = [_prediction(i, p, r) for i, (p, r) in enumerate(pairs)]
    metrics = score_predictions(predictions, resamples=200)
    preds, refs = zip(*pairs)
    assert metrics["bleu"]["value"] == pytest.approx(text_metrics.corpus_bleu(preds, refs))
    assert metrics["exact_match"]["value"] == pytest.approx(2 / 5)  # SQuAD normalisation: "paris" == "Paris."
    assert metrics["perplexity"]["value"] == pytest.approx(np.exp(sum(2.0 + i for i in range(5)) / 20))
    assert metrics["rougeL"]["ci95"][0] <= metrics["rougeL"]["value"] <= metrics["rougeL"]["ci95"][1]
    same = paired_deltas(predictions, predictions, resamples=200)
    assert same["chrf"]["delta"] == 0 and same["chrf"]["p_value"] == 1.0
    assert paired_deltas(predictions, predictions[:-1]) == {}  # different items: no pairing


def test_chat_items_take_the_last_answer_as_reference():
    rows = [{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                          {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]},
            {"messages": [{"role": "user", "content": "e"}]}]
    first, second = chat_items(rows)
    assert first["prompt"] == "c" and first["reference"] == "d" and len(first["messages"]) == 3
    assert second["prompt"] == "e" and second["reference"] is None


def test_judge_swaps_positions_so_a_position_biased_judge_gives_only_ties():
    from tunesmith.eval.judge import judge_pairs

    items = [{"id": str(i), "prompt": "q", "baseline": "short", "candidate": "a longer answer"} for i in range(4)]
    first_always = judge_pairs(lambda q, a, b: 1.0, items)  # always prefers whatever is shown first
    assert (first_always["wins"], first_always["losses"], first_always["ties"]) == (0, 0, 4)
    assert first_always["win_rate"] is None and first_always["order_disagreement"] == 1.0
    longer = judge_pairs(lambda q, a, b: len(a) - len(b), items)  # prefers the longer answer in both orders
    assert longer["wins"] == 4 and longer["win_rate"] == 1.0 and longer["ci95"][0] > 0.5
