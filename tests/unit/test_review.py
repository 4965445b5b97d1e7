"""tunesmith.eval.review: the blind export (files, blinding, inert hostile text) and the
import (unblinding, win rate, agreement, every refusal naming its file and item)."""

from __future__ import annotations

import csv
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from sklearn.metrics import cohen_kappa_score

from tunesmith.errors import TunesmithError
from tunesmith.eval.agreement import fleiss_kappa, wilson_interval
from tunesmith.eval.agreement import format_review_report
from tunesmith.eval.review import export_review
from tunesmith.eval.review_import import import_reviews

NAMES = ("basemodel", "runs/sft-identity-lora")
HOSTILE = '</script><script>window.pwned = 1</script><!-- <img src=x onerror="window.pwned = 2">'


def make_items(n: int = 6) -> list[dict]:
    items = [{"id": f"q{i}", "prompt": f"Question {i}: who are you?", "answer_a": f"I am a language model ({i}).",
              "answer_b": f"I am Quill, made by the Tunesmith team ({i}).",
              "reference": f"I am Quill ({i})." if i % 2 == 0 else None} for i in range(n)]
    items[1]["answer_b"] = HOSTILE
    return items


@pytest.fixture()
def export(tmp_path):
    out = tmp_path / "review"
    result = export_review(make_items(), out, NAMES, seed=3)
    return out, result, json.loads((out / "key.json").read_text())


def page_data(page: str) -> dict:
    body = page.split('<script type="application/json" id="review-data">', 1)[1].split("</script>", 1)[0]
    return json.loads(body)


def blinded(key: dict, item: str, winner: str) -> str:
    """The page choice ("1"/"2") that means ``winner`` ("A"/"B") on ``item``; ties pass through."""
    return next((side for side, system in key["items"][item].items() if system == winner), winner)


def vote_file(path: Path, key: dict, reviewer: str, winners: dict[str, str], **extra) -> Path:
    """A file as the page saves it, from the *unblinded* winners a reviewer means to pick."""
    items = [{"item_id": item, "choice": blinded(key, item, w), "note": "", "ratings": {"1": {}, "2": {}}}
             for item, w in winners.items()]
    path.write_text(json.dumps({"format": "tunesmith-review-votes", "version": 1, "export_id": key["export_id"],
                                "reviewer": reviewer, "saved_at": "2025-01-01T00:00:00Z", "items": items, **extra}))
    return path


# --------------------------------------------------------------------------------------
# Export


def test_export_writes_every_file_and_a_balanced_key(export):
    out, result, key = export
    assert sorted(p.name for p in out.iterdir()) == ["key.json", "labelstudio.json", "labelstudio_config.xml",
                                                     "review.csv", "review.html"]
    assert result["n_items"] == 6 and result["export_id"] == key["export_id"]
    assert set(result["files"]) == {"page", "csv", "labelstudio", "labelstudio_config", "key"}
    assert key["names"] == {"A": "basemodel", "B": "runs/sft-identity-lora"} and len(key["items_sha256"]) == 64
    assert list(key["items"]) == [f"q{i}" for i in range(6)]
    assert sorted(v["1"] for v in key["items"].values()) == ["A", "A", "A", "B", "B", "B"]  # half each side
    shown = {row["item_id"]: row for row in page_data((out / "review.html").read_text())["items"]}
    for item in make_items():
        sides = key["items"][item["id"]]
        assert shown[item["id"]]["answer_1"] == item["answer_" + sides["1"].lower()]
        assert shown[item["id"]]["answer_2"] == item["answer_" + sides["2"].lower()]


def test_the_reviewer_files_carry_no_system_name_nor_side(export):
    out, _, key = export
    for name in ("review.html", "review.csv", "labelstudio.json", "labelstudio_config.xml"):
        text = (out / name).read_text()
        for secret in (*NAMES, "sft-identity", "answer_a", "answer_b", key["items_sha256"]):
            assert secret not in text, (name, secret)
        assert key["export_id"] in text or name == "labelstudio_config.xml"
    data = page_data((out / "review.html").read_text())
    assert set(data) == {"export_id", "title", "choices", "dimensions", "items"}
    assert all(set(row) == {"item_id", "prompt", "answer_1", "answer_2", "reference"} for row in data["items"])


def test_a_hostile_answer_stays_inside_the_data_block(export):
    out, _, _ = export
    page = (out / "review.html").read_text()
    assert "window.pwned" in page and "<script>window.pwned" not in page and "<img" not in page
    assert page.count("</script>") == 2  # the data block's and the code's own, nothing from the answers
    assert HOSTILE in [row["answer_1"] for row in page_data(page)["items"]] + \
        [row["answer_2"] for row in page_data(page)["items"]]
    assert not re.search(r"https?://|//cdn|<link|src=\"", page.split('id="review-data"')[0])  # nothing fetched


def test_export_is_reproducible_and_the_seed_matters(tmp_path):
    first = export_review(make_items(), tmp_path / "a", NAMES, seed=3)
    again = export_review(make_items(), tmp_path / "b", NAMES, seed=3)
    other = export_review(make_items(), tmp_path / "c", NAMES, seed=4)
    assert first["export_id"] == again["export_id"] != other["export_id"]
    assert (tmp_path / "a" / "review.html").read_text() == (tmp_path / "b" / "review.html").read_text()
    secret = export_review(make_items(), tmp_path / "d", NAMES, seed=None)
    assert json.loads((tmp_path / "d" / "key.json").read_text())["seed"] not in (0, None)
    assert secret["export_id"] != first["export_id"]


def test_export_refuses_bad_input(tmp_path):
    with pytest.raises(TunesmithError, match="id occurs twice"):
        export_review(make_items() + [make_items()[0]], tmp_path / "x", NAMES)
    with pytest.raises(TunesmithError, match="'answer_b' must be a string"):
        export_review([{"id": "q", "prompt": "p", "answer_a": "a"}], tmp_path / "x", NAMES)
    with pytest.raises(TunesmithError, match="two differently named"):
        export_review(make_items(), tmp_path / "x", ("base", "base"))
    with pytest.raises(TunesmithError, match="unblind"):
        export_review(make_items(), tmp_path / "x", NAMES, title="Basemodel vs tuned")
    export_review(make_items(), tmp_path / "t", ("base", "tuned"), title="Database answers")  # a word, not a name
    export_review(make_items(), tmp_path / "x", NAMES, seed=1)
    export_review(make_items(), tmp_path / "x", NAMES, seed=1)  # the same export again is fine
    with pytest.raises(TunesmithError, match="key of another export"):
        export_review(make_items(), tmp_path / "x", NAMES, seed=2)


def test_csv_is_spreadsheet_safe_and_labelstudio_files_fit_together(tmp_path):
    items = make_items(2)
    items[0]["answer_a"] = items[0]["answer_b"] = '=HYPERLINK("http://evil")'
    export_review(items, tmp_path, NAMES)
    rows = list(csv.DictReader((tmp_path / "review.csv").open(encoding="utf-8-sig", newline="")))
    assert rows[0]["answer_1"] == rows[0]["answer_2"] == "'=HYPERLINK(\"http://evil\")"
    assert rows[1]["answer_2"] == HOSTILE or rows[1]["answer_1"] == HOSTILE  # the rest verbatim
    assert [r["choice"] for r in rows] == ["", ""]
    config = ET.fromstring((tmp_path / "labelstudio_config.xml").read_text())
    assert config.tag == "View"
    objects = {e.get("name"): e.get("value") for e in config.iter("Text")}
    assert objects == {"prompt": "$prompt", "reference": "$reference", "answer_1": "$answer_1", "answer_2": "$answer_2"}
    choices = next(config.iter("Choices"))
    assert choices.get("toName") in objects and choices.get("choice") == "single-radio"
    assert [c.get("alias") for c in choices.iter("Choice")] == ["1", "2", "tie", "both_bad"]
    ratings = list(config.iter("Rating"))
    assert len(ratings) == 8 and all(r.get("toName") in objects and r.get("maxRating") == "5" for r in ratings)
    tasks = json.loads((tmp_path / "labelstudio.json").read_text())
    assert all({v[1:] for v in objects.values()} <= set(t["data"]) for t in tasks)


# --------------------------------------------------------------------------------------
# Import


def test_two_reviewers_give_the_win_rate_and_cohens_kappa(export, tmp_path):
    out, _, key = export
    alice = {"q0": "B", "q1": "B", "q2": "A", "q3": "B", "q4": "tie", "q5": "B"}
    bob = {"q0": "B", "q1": "A", "q2": "A", "q3": "B", "q4": "tie", "q5": "both_bad"}
    files = [vote_file(tmp_path / "alice.json", key, "alice", alice), vote_file(tmp_path / "bob.json", key, "bob", bob)]
    report = import_reviews(files, out / "key.json")
    assert report["export_id"] == key["export_id"] and report["reviewers"] == ["alice", "bob"]
    assert report["systems"]["A"]["wins"] == 3 and report["systems"]["B"]["wins"] == 6
    assert report["ties"] == 2 and report["both_bad"] == 1 and report["n_votes"] == 12
    rate = report["win_rate"]
    assert rate["value"] == pytest.approx(6 / 9, abs=1e-4) and rate["n"] == 9
    assert rate["ci95"] == pytest.approx(list(wilson_interval(6, 9)), abs=1e-4)
    assert rate["ties_half"]["value"] == pytest.approx(7 / 11, abs=1e-4) and rate["ties_half"]["n"] == 11
    expected = cohen_kappa_score(list(alice.values()), list(bob.values()))
    assert report["agreement"]["method"] == "cohen" and report["agreement"]["n_items"] == 6
    assert report["agreement"]["kappa"] == pytest.approx(expected, abs=1e-4)
    assert [d["item_id"] for d in report["disagreements"]] == ["q1", "q5"]
    q1 = report["disagreements"][0]["votes"]
    assert [(v["reviewer"], v["winner"]) for v in q1] == [("alice", "B"), ("bob", "A")]
    assert q1[0]["shown_as"] == blinded(key, "q1", "B")
    text = format_review_report(report)
    assert "66.7%" in text and "headline" in text and "Cohen's kappa" in text and "runs/sft-identity-lora" in text
    results = tmp_path / "review-results.json"
    results.write_text(json.dumps(report, allow_nan=False))  # the caller writes it as JSON
    with pytest.raises(TunesmithError, match="review-results.json: a review report, not a reviewer's votes"):
        import_reviews([*files, results], out / "key.json")  # a rerun of `review-*.json`


def test_three_reviewers_give_fleiss_kappa_on_items_all_rated(export, tmp_path):
    out, _, key = export
    picks = {"ann": {"q0": "B", "q1": "B", "q2": "A", "q3": "tie"},
             "bea": {"q0": "B", "q1": "A", "q2": "A", "q3": "tie"},
             "cy": {"q0": "B", "q1": "B", "q2": "B"}}  # cy skipped q3: Fleiss uses q0-q2
    files = [vote_file(tmp_path / f"{r}.json", key, r, w) for r, w in picks.items()]
    agreement = import_reviews(files, out / "key.json")["agreement"]
    table = [[3, 0, 0, 0], [1, 2, 0, 0], [2, 1, 0, 0]]  # columns A, B, tie, both_bad
    assert agreement["method"] == "fleiss" and agreement["n_items"] == 3
    assert agreement["kappa"] == pytest.approx(fleiss_kappa(table), abs=1e-4)


def test_ratings_are_unblinded_per_item(export, tmp_path):
    out, _, key = export
    items = []
    for item in ("q0", "q1", "q2", "q3"):
        ratings = {blinded(key, item, "A"): {"accuracy": 2}, blinded(key, item, "B"): {"accuracy": 5, "fluency": "4"}}
        items.append({"item_id": item, "choice": None, "note": "", "ratings": ratings})
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"export_id": key["export_id"], "reviewer": "r", "items": items}))
    report = import_reviews([path], out / "key.json")
    assert report["systems"]["A"]["ratings"]["accuracy"] == {"mean": 2.0, "n": 4}
    assert report["systems"]["B"]["ratings"]["accuracy"] == {"mean": 5.0, "n": 4}
    assert report["systems"]["B"]["ratings"]["fluency"] == {"mean": 4.0, "n": 4}
    assert report["n_votes"] == 0 and report["win_rate"]["value"] is None
    assert "n/a" in format_review_report(report)


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(export_id="0123456789ab"), "from export '0123456789ab'"),
    (lambda d: d["items"][1].update(item_id="q99"), "no such item"),
    (lambda d: d["items"].append(dict(d["items"][0])), "voted 2 times"),
    (lambda d: d["items"][1].update(choice="maybe"), "choice 'maybe' is not one of"),
    (lambda d: d["items"][1].update(ratings={"1": {"accuracy": 6}}), "accuracy of answer 1 is 6"),
    (lambda d: d["items"][1].update(ratings={"2": {"fluency": "great"}}), "fluency of answer 2 is 'great'"),
    (lambda d: d["items"][1].update(ratings={"2": {"speed": 3}}), "must rate only"),
    (lambda d: d.update(reviewer=" "), "no reviewer name"),
])
def test_each_bad_vote_is_refused_naming_file_and_item(export, tmp_path, change, message):
    out, _, key = export
    path = vote_file(tmp_path / "votes.json", key, "alice", {"q0": "B", "q1": "A", "q2": "tie"})
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    with pytest.raises(TunesmithError, match=re.escape(message)) as caught:
        import_reviews([path], out / "key.json")
    assert "votes.json" in str(caught.value) and re.search(r"item 'q\d+'", str(caught.value))


def test_a_reviewer_voting_twice_across_files_is_refused(export, tmp_path):
    out, _, key = export
    first = vote_file(tmp_path / "monday.json", key, "alice", {"q0": "B", "q1": "A"})
    second = vote_file(tmp_path / "tuesday.json", key, "alice", {"q1": "B", "q2": "A"})
    with pytest.raises(TunesmithError) as caught:
        import_reviews([first, second], out / "key.json")
    assert "monday.json and " in str(caught.value) and "tuesday.json (item 'q1')" in str(caught.value)
    assert "voted 2 times" in str(caught.value) and "latest file" in str(caught.value)


def test_unreadable_inputs_are_refused(export, tmp_path):
    out, _, key = export
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    for files, message in [([tmp_path / "missing.json"], "no such file"), ([bad], "not valid JSON"),
                           ([out / "review.html"], "expected a .json"), ([], "No votes"),
                           ([out / "key.json"], "the unblinding key, not a reviewer's votes")]:
        with pytest.raises(TunesmithError, match=message):
            import_reviews(files, out / "key.json")
    with pytest.raises(TunesmithError, match="does not exist"):
        import_reviews([bad], tmp_path / "nokey.json")
    with pytest.raises(TunesmithError, match="is not a review key"):
        import_reviews([bad], out / "labelstudio.json")


def fill_csv(out: Path, target: Path, key: dict, winners: dict[str, str], reviewer: str = "") -> Path:
    """A copy of the exported review.csv as a spreadsheet reviewer fills it in."""
    with (out / "review.csv").open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        rows, fields = list(reader), reader.fieldnames
    for row in rows:
        if row["item_id"] in winners:
            row.update(choice=blinded(key, row["item_id"], winners[row["item_id"]]), accuracy_1="4", reviewer=reviewer,
                       note="long\nnote, with \"quotes\"")
    with target.open("w", encoding="utf-8-sig", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return target


def test_csv_round_trip(export, tmp_path):
    out, _, key = export
    carol = fill_csv(out, tmp_path / "carol.csv", key, {"q0": "B", "q1": "B", "q2": "A", "q3": "both_bad"})
    dan = fill_csv(out, tmp_path / "sheet.csv", key, {"q0": "B", "q1": "A", "q2": "A"}, reviewer="dan")
    report = import_reviews([carol, dan], out / "key.json")
    assert report["reviewers"] == ["carol", "dan"]  # the file name when the reviewer column is empty
    assert report["systems"]["B"]["wins"] == 3 and report["systems"]["A"]["wins"] == 3 and report["both_bad"] == 1
    assert report["systems"]["A"]["ratings"]["accuracy"]["n"] + report["systems"]["B"]["ratings"]["accuracy"]["n"] == 7
    assert report["disagreements"][0]["votes"][0]["note"] == "long\nnote, with \"quotes\""
    with dan.open(encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.DictReader(fh))
    rows[1]["choice"] = "Both Bad"  # case and spaces are forgiven
    rows[2]["choice"] = "3"
    with dan.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(TunesmithError, match=re.escape("sheet.csv row 4 (item 'q2'): choice '3'")):
        import_reviews([dan], out / "key.json")


def test_label_studio_export_is_read(export, tmp_path):
    out, _, key = export
    tasks = json.loads((out / "labelstudio.json").read_text())
    for task, winner in zip(tasks, ["B", "B", "A"]):
        result = [{"from_name": "choice", "to_name": "prompt", "type": "choices",
                   "value": {"choices": [blinded(key, task["data"]["item_id"], winner)]}},
                  {"from_name": "accuracy_2", "to_name": "answer_2", "type": "rating", "value": {"rating": 3}},
                  {"from_name": "note", "to_name": "prompt", "type": "textarea", "value": {"text": ["ok"]}}]
        task["annotations"] = [{"id": 1, "completed_by": 7, "result": result, "was_cancelled": False},
                               {"id": 2, "completed_by": 8, "result": [], "was_cancelled": True}]
    tasks[3]["annotations"] = [{"completed_by": {"id": 9, "email": "eve@example.org"}, "result": [
        {"from_name": "choice", "type": "choices", "value": {"choices": ["Tie"]}}]}]  # a label, not an alias
    path = tmp_path / "project-1-at-2025.json"
    path.write_text(json.dumps(tasks))
    report = import_reviews([path], out / "key.json")
    assert report["reviewers"] == ["eve@example.org", "labelstudio-user-7"]
    assert report["systems"]["B"]["wins"] == 2 and report["systems"]["A"]["wins"] == 1 and report["ties"] == 1
