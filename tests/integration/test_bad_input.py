"""Bad input: a one-paragraph error naming the problem and the fix, exit code 2, no traceback."""

from __future__ import annotations

import json

import pytest
import yaml

from tunesmith.cli import main


def _run(capsys, *args) -> str:
    assert main(["train", *args]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.startswith("error: ")
    return err


def _edit(recipe, **sections):
    data = yaml.safe_load(recipe.read_text())
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    recipe.write_text(yaml.safe_dump(data))
    return recipe


def test_missing_recipe_file(capsys, tmp_path):
    err = _run(capsys, str(tmp_path / "nope.yaml"))
    assert "nope.yaml" in err and "does not exist" in err


def test_unknown_config_key_suggests_the_closest(capsys, cls_recipe):
    err = _run(capsys, str(cls_recipe), "--set", "train.learning_rate=1e-3")
    assert "train.learning_rate" in err and "train.lr" not in err.split("Did you mean")[0]
    err = _run(capsys, str(cls_recipe), "--set", "data.max_lenght=32")
    assert "Did you mean 'data.max_length'" in err


def test_unknown_model_name(capsys, cls_recipe):
    err = _run(capsys, str(cls_recipe), "--set", "model.name=builtin:gpt-17")
    assert "builtin:gpt-17" in err and "builtin:minilm" in err


def test_missing_model_folder(capsys, cls_recipe, tmp_path):
    err = _run(capsys, str(cls_recipe), "--set", f"model.name={tmp_path}/no-such-model")
    assert "no-such-model" in err


def test_unknown_dataset_name(capsys, cls_recipe):
    err = _run(capsys, str(cls_recipe), "--set", "data.train=builtin:imdb")
    assert "builtin:imdb" in err and "builtin:rt-snippets" in err


def test_missing_data_file(capsys, cls_recipe):
    err = _run(capsys, str(cls_recipe), "--set", "data.train=missing.jsonl")
    assert "missing.jsonl" in err


def test_missing_label_column_names_the_fix(capsys, cls_recipe):
    (cls_recipe.parent / "nolabel.csv").write_text("text,sentiment\ngreat film,positive\nawful film,negative\n")
    err = _run(capsys, str(cls_recipe), "--set", "data.train=nolabel.csv")
    assert "label" in err and "sentiment" in err and "label_field" in err


def test_empty_dataset(capsys, cls_recipe):
    (cls_recipe.parent / "empty.jsonl").write_text("")
    err = _run(capsys, str(cls_recipe), "--set", "data.train=empty.jsonl")
    assert "empty.jsonl" in err and "no rows" in err.lower() or "empty" in err.lower()


def test_bad_row_is_named_by_line(capsys, cls_recipe):
    lines = [json.dumps({"text": "fine film", "label": "positive"}), "{not json", json.dumps({"text": "", "label": "negative"})]
    (cls_recipe.parent / "bad.jsonl").write_text("\n".join(lines) + "\n")
    err = _run(capsys, str(cls_recipe), "--set", "data.train=bad.jsonl")
    assert "line 2" in err and "line 3" in err


def test_eval_label_outside_the_label_set(capsys, cls_recipe):
    rows = [{"text": "meh film", "label": "neutral"}, {"text": "good film", "label": "positive"}]
    (cls_recipe.parent / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    err = _run(capsys, str(cls_recipe))
    assert "'neutral'" in err and "data.labels" in err and "eval.jsonl line 1" in err


def test_given_label_set_rejects_other_labels(capsys, cls_recipe):
    err = _run(capsys, str(cls_recipe), "--set", "data.labels=[positive, neutral]")
    assert "negative" in err


def test_debug_shows_the_traceback(cls_recipe):
    from tunesmith.errors import ConfigError

    with pytest.raises(ConfigError):
        main(["--debug", "train", str(cls_recipe), "--set", "train.bogus=1"])


def test_quarantine_trains_on_the_valid_rows_and_writes_rejects(capsys, cls_recipe, tmp_path):
    train = tmp_path / "train.jsonl"
    lines = train.read_text().splitlines()
    lines[4] = '{"text": "no label here"}'
    lines[9] = "{broken json"
    train.write_text("\n".join(lines) + "\n")
    assert main(["train", str(cls_recipe), "--set", "train.epochs=1", "--set", "data.on_error=quarantine",
                 "--set", "data.max_drop_fraction=0.05"]) == 0
    run = tmp_path / "runs" / "tiny-cls"
    rejects = [json.loads(line) for line in (run / "rejects.jsonl").read_text().splitlines()]
    assert [(r["line"], r["codes"]) for r in rejects] == [(5, ["missing_field"]), (10, ["invalid_json"])]
    summary = json.loads((run / "summary.json").read_text())
    validation = summary["data"]["validation"]
    assert validation["rows_read"] == 160 + 40 and validation["rejected"] == 2
    assert summary["data"]["train_rows"] == 158
    assert "2 invalid rows left out (quarantine)" in capsys.readouterr().out
