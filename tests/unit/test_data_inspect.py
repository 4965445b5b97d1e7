"""``tunesmith data inspect`` / ``data prepare``: the report's counts, files and plot."""

from __future__ import annotations

import json

from tunesmith.cli import main


def test_inspect_a_file_reports_rejects_duplicates_and_lengths(tmp_path, capsys):
    rows = [json.dumps({"text": f"sentence number {i}", "label": "a" if i % 3 else "b"}) for i in range(20)]
    rows[4] = '{"text": "", "label": "a"}'
    rows.append(rows[0])
    (tmp_path / "d.jsonl").write_text("\n".join(rows) + "\n")
    assert main(["data", "inspect", str(tmp_path / "d.jsonl"), "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "rows read 21, valid 20, rejected 1" in out and "line 5: field 'text' is empty" in out
    report = json.loads((tmp_path / "r" / "data_report.json").read_text())
    assert report["shape"] == "classification" and report["duplicates"]["exact_duplicates"] == 1
    assert report["labels"] == {"all": {"a": 12, "b": 8}}  # row 5 rejected, row 1 repeated
    assert report["lengths"]["rows"]["p50"] == 3 and "lengths" not in report["lengths"]["rows"]
    assert (tmp_path / "r" / "lengths.png").stat().st_size > 5000


def test_inspect_a_recipe_never_stops_at_bad_rows_and_prepare_writes_the_splits(cls_recipe, tmp_path, capsys):
    train = tmp_path / "train.jsonl"
    train.write_text(train.read_text() + "{broken\n")
    assert main(["data", "inspect", str(cls_recipe), "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "rejected 1" in out and "invalid_json: 1" in out and "lengths train (tokens)" in out
    report = json.loads((tmp_path / "r" / "data_report.json").read_text())
    assert report["train_rows"] == 160 and report["eval_rows"] == 40
    assert report["lengths"]["train"]["max_length"] == 32
    # prepare follows the recipe's own policy: raise...
    assert main(["data", "prepare", str(cls_recipe), "--out", str(tmp_path / "p")]) == 2
    # ...or, told to drop, writes what training would see.
    assert main(["data", "prepare", str(cls_recipe), "--out", str(tmp_path / "p"), "--set", "data.on_error=quarantine"]) == 0
    written = (tmp_path / "p" / "train.jsonl").read_text().splitlines()
    assert len(written) == 160 and set(json.loads(written[0])) == {"text", "label"}
    assert len((tmp_path / "p" / "eval.jsonl").read_text().splitlines()) == 40
    assert json.loads((tmp_path / "p" / "rejects.jsonl").read_text())["line"] == 161


def test_inspect_takes_every_shape_the_help_lists(tmp_path, capsys):
    from tunesmith.cli import main

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n'
                     '{"prompt": "a", "chosen": "b", "rejected": "c"}\n', encoding="utf-8")
    docs = tmp_path / "docs.txt"
    docs.write_text("one document\nanother document\n", encoding="utf-8")
    assert main(["data", "inspect", str(pairs), "--shape", "preference", "--out", str(tmp_path / "a")]) == 0
    assert "duplicates: 1 exact" in capsys.readouterr().out
    assert main(["data", "inspect", str(docs), "--shape", "text", "--out", str(tmp_path / "b")]) == 0
    assert "rows read 2, valid 2" in capsys.readouterr().out
