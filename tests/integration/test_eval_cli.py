"""`tunesmith eval` end to end on tiny models: metrics with intervals that match the
reference libraries, the comparison with the base, bad input, and the review round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunesmith.cli import main
from tunesmith.eval import text_metrics
from tunesmith.jsonl import read_jsonl, write_jsonl


def _trained(tmp_path_factory, write_recipe, base: Path, name: str) -> Path:
    folder = tmp_path_factory.mktemp(name)
    recipe = write_recipe(folder, base)
    assert main(["train", str(recipe), "--output-dir", str(folder / "run"), "--quiet"]) == 0
    return folder / "run"


@pytest.fixture(scope="module")
def chat_run(tmp_path_factory, tiny_llama_dir) -> Path:
    from tunesmith.testing import write_chat_recipe

    return _trained(tmp_path_factory, write_chat_recipe, tiny_llama_dir, "chat-run")


@pytest.fixture(scope="module")
def cls_run(tmp_path_factory, tiny_bert_dir) -> Path:
    from tunesmith.testing import write_cls_recipe

    return _trained(tmp_path_factory, write_cls_recipe, tiny_bert_dir, "cls-run")


def test_chat_run_summary_has_scored_answers_and_the_forgetting_check(chat_run):
    summary = json.loads((chat_run / "summary.json").read_text())
    gen = summary["generation"]
    # trained on its identity chats: the held-out answers got much closer to the references
    assert gen["after"]["chrf"]["value"] > gen["before"]["chrf"]["value"] + 20
    assert gen["deltas"]["chrf"]["ci95"][0] > 0
    assert summary["eval_after"]["chrf"] == gen["after"]["chrf"]["value"]
    forgetting = summary["forgetting"]
    assert forgetting["items"] == 100 and set(forgetting["metrics"]) == {"chrf", "token_f1", "rougeL", "perplexity"}
    rows = read_jsonl(chat_run / "predictions.jsonl")
    assert rows[0]["prediction_before"] is not None and rows[0]["scores"]["chrf"] >= 0
    report = (chat_run / "report.html").read_text()
    assert 'id="generation"' in report and 'id="forgetting"' in report and 'id="scorecard"' in report


def test_eval_of_a_run_scores_against_its_base_with_intervals(chat_run, tiny_llama_dir, tmp_path, capsys):
    out = tmp_path / "ev"
    human = tmp_path / "results.json"
    human.write_text(json.dumps({"systems": {"A": {"ratings": {"accuracy": {"mean": 2.0, "n": 3}}},
                                             "B": {"ratings": {"accuracy": {"mean": 4.0, "n": 3}}}}}))
    assert main(["eval", str(chat_run), "--out", str(out), "--max-new-tokens", "12", "--judge", str(tiny_llama_dir),
                 "--human", str(human)]) == 0
    result = json.loads((out / "metrics.json").read_text())
    assert result["against"].startswith("base (")
    rows = read_jsonl(out / "predictions.jsonl")
    preds, refs = [r["prediction"] for r in rows], [r["reference"] for r in rows]
    # the corpus scores are sacrebleu's on the same answers
    assert result["metrics"]["bleu"]["value"] == pytest.approx(text_metrics.corpus_bleu(preds, refs), abs=1e-9)
    assert result["metrics"]["chrf"]["value"] == pytest.approx(text_metrics.corpus_chrf(preds, refs), abs=1e-9)
    for name, entry in result["metrics"].items():
        low, high = entry["ci95"]
        assert low <= entry["value"] + 1e-9 and entry["value"] <= high + 1e-9, name
    assert result["deltas"]["chrf"]["delta"] == pytest.approx(
        result["metrics"]["chrf"]["value"] - result["against_metrics"]["chrf"]["value"])
    assert result["decoding"]["strategy"] == "greedy" and result["decoding"]["max_new_tokens"] == 12
    assert all(r["against_prediction"] is not None for r in rows)
    card = {r["dimension"]: r for r in result["scorecard"]["rows"]}
    assert card["task"]["finetuned"] == result["metrics"]["chrf"]["value"]
    assert card["human"]["change"] == pytest.approx(1.0)  # mean rating 2 -> 4
    summary = json.loads((chat_run / "summary.json").read_text())
    assert card["ood"]["baseline"] == summary["forgetting"]["metrics"]["chrf"]["before"]
    assert 'id="scorecard"' in (out / "report.html").read_text()
    judge = result["judge"]
    assert judge["wins"] + judge["losses"] + judge["ties"] == len(rows) == len(judge["verdicts"])
    assert "difference" in capsys.readouterr().out
    assert "<h2 id=\"metrics\">" in (out / "report.html").read_text()


def test_invalid_rows_follow_on_error_with_row_numbers(chat_run, tmp_path, capsys):
    data = tmp_path / "rows.jsonl"
    write_jsonl(data, [{"messages": [{"role": "user", "content": "who are you?"},
                                     {"role": "assistant", "content": "i am quill"}]},
                       {"messages": [{"role": "user"}]},
                       {"messages": [{"role": "user", "content": "no reference here"}]}])
    assert main(["eval", str(chat_run), "--data", str(data), "--against", "none", "--out", str(tmp_path / "a")]) == 2
    assert "line 2" in capsys.readouterr().err
    assert main(["eval", str(chat_run), "--data", str(data), "--against", "none", "--on-error", "drop",
                 "--out", str(tmp_path / "b")]) == 0
    result = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert result["rejected_rows"] == 1 and result["rows"] == 2
    # the row without a reference is answered but skipped by reference-based metrics
    assert any("no reference" in note for note in result["notes"])
    rows = read_jsonl(tmp_path / "b" / "predictions.jsonl")
    assert [r["reference"] is None for r in rows] == [False, True] and "scores" not in rows[1]


def test_a_base_model_needs_data_and_a_classifier_cannot_generate(cls_run, tiny_llama_dir, tmp_path, capsys):
    assert main(["eval", str(tiny_llama_dir), "--out", str(tmp_path / "x")]) == 2
    assert "--data" in capsys.readouterr().err
    assert main(["eval", str(cls_run), "--metrics", "bleu", "--out", str(tmp_path / "y")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cannot generate" in errors[0]


def test_classifier_eval_reports_sklearn_metrics_and_calibration(cls_run, tmp_path):
    from sklearn.metrics import f1_score, roc_auc_score

    out = tmp_path / "cls"
    assert main(["eval", str(cls_run), "--against", "base", "--out", str(out)]) == 0
    result = json.loads((out / "metrics.json").read_text())
    rows = read_jsonl(out / "predictions.jsonl")
    labels = result["labels"]
    gold = [labels.index(r["reference"]) for r in rows]
    pred = [labels.index(r["prediction"]) for r in rows]
    assert result["metrics"]["macro_f1"]["value"] == pytest.approx(f1_score(gold, pred, average="macro"), abs=1e-9)
    positive = [r["probs"][labels[1]] for r in rows]
    assert result["metrics"]["roc_auc"]["value"] == pytest.approx(roc_auc_score(gold, positive), abs=1e-5)
    # trained beats the untrained head of its base, and the paired interval says so
    assert result["deltas"]["accuracy"]["ci95"][0] > 0
    assert (out / "reliability.png").stat().st_size > 1000
    # the run's own summary holds the same metrics, computed by the same code on the same rows
    summary = json.loads((cls_run / "summary.json").read_text())
    assert summary["classification"]["after"]["roc_auc"]["value"] == pytest.approx(
        result["metrics"]["roc_auc"]["value"], abs=1e-5)
    assert 'id="classification"' in (cls_run / "report.html").read_text()
    assert 'id="confusion"' in (out / "report.html").read_text()


def test_review_export_then_import_of_votes(chat_run, tiny_llama_dir, tmp_path, capsys):
    data = tmp_path / "prompts.jsonl"
    write_jsonl(data, [{"messages": [{"role": "user", "content": q}]} for q in ("who are you?", "hello", "what is 2+2")])
    out = tmp_path / "review"
    assert main(["eval", "review-export", str(tiny_llama_dir), str(chat_run), "--data", str(data), "--out", str(out),
                 "--max-new-tokens", "6"]) == 0
    page = (out / "review.html").read_text()
    assert str(chat_run) not in page and str(tiny_llama_dir) not in page  # blinded
    key = json.loads((out / "key.json").read_text())
    # the reviewer prefers the trained run (system B) on every item
    votes = {"format": "tunesmith-review-votes", "version": 1, "export_id": key["export_id"], "reviewer": "ann",
             "saved_at": "now", "items": [{"item_id": item, "choice": next(s for s, v in sides.items() if v == "B"),
                                           "note": "", "ratings": {}} for item, sides in key["items"].items()]}
    (out / "review-ann.json").write_text(json.dumps(votes))
    assert main(["eval", "review-import", str(out / "review-ann.json"), "--key", str(out / "key.json")]) == 0
    report = json.loads((out / "results.json").read_text())
    assert report["win_rate"]["value"] == 1.0 and report["systems"]["B"]["wins"] == 3


def test_a_merged_export_evaluates_like_its_run(chat_run, tmp_path):
    merged = tmp_path / "merged"
    assert main(["export", str(chat_run), "--to", "merged", "--out", str(merged)]) == 0
    args = ["--data", str(chat_run / "eval_set.jsonl"), "--against", "none", "--max-new-tokens", "8"]
    assert main(["eval", str(merged), *args, "--out", str(tmp_path / "m")]) == 0
    assert main(["eval", str(chat_run), *args, "--out", str(tmp_path / "r")]) == 0
    answers = [[r["prediction"] for r in read_jsonl(tmp_path / name / "predictions.jsonl")] for name in ("m", "r")]
    assert answers[0] == answers[1]
