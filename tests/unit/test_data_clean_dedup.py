"""Cleaning steps, exact and near-duplicate removal (English and Chinese), and the
train/eval leakage check, alone and through the data pipeline."""

from __future__ import annotations

import json

import pytest

from tunesmith.config.schema import CleanConfig, DataConfig, DedupConfig
from tunesmith.data.clean import clean_rows, clean_text
from tunesmith.data.dedup import deduplicate, leakage
from tunesmith.data.pipeline import prepare_data

ALL = CleanConfig(html=True, fillers=True, mask_pii=True)


@pytest.mark.parametrize("raw,expected", [
    ("Ｆｕｌｌｗｉｄｔｈ　ｔｅｘｔ", "Fullwidth text"),
    ("a\x07b\u200bc\ufeff", "abc"),
    ("  many    spaces\t here \n\n\n\nnext  ", "many spaces here\n\nnext"),
    ("<p>Great <b>film</b> &amp; cast</p><script>alert(1)</script>", "Great film & cast"),
    ("Um, I think, uh, it works. Hmm.", "I think, it works."),
    ("嗯，那个，我觉得这部电影很好看啊", "我觉得这部电影很好看啊"),
    ("write to bob.smith@example.com or call +1 415-555-1234", "write to [EMAIL] or call [PHONE]"),
    ("身份证 11010519491231002X 电话 13812345678", "身份证 [ID] 电话 [PHONE]"),
    ("in 2023 I paid 1500 dollars for 3 tickets", "in 2023 I paid 1500 dollars for 3 tickets"),
])
def test_each_cleaning_step(raw, expected):
    assert clean_text(raw, ALL) == expected


def test_steps_are_switchable_and_length_limits_drop_rows():
    off = CleanConfig(nfkc=False, whitespace=False, control_chars=False)
    assert clean_text("Ｆｕｌｌ  <b>x</b>", off) == "Ｆｕｌｌ  <b>x</b>"
    rows = [{"text": "ok text", "label": "a"}, {"text": "x", "label": "a"}, {"text": "y" * 50, "label": "b"},
            {"text": "<br/>", "label": "b"}]
    kept, report = clean_rows(rows, CleanConfig(html=True, min_chars=2, max_chars=20))
    assert [r["text"] for r in kept] == ["ok text"]
    assert report["dropped"] == {"too_short": 1, "too_long": 1, "empty_after_cleaning": 1}
    chats = [{"messages": [{"role": "user", "content": "Um, hi"}, {"role": "assistant", "content": "hello  there"}]}]
    kept, report = clean_rows(chats, CleanConfig(fillers=True))
    assert [m["content"] for m in kept[0]["messages"]] == ["hi", "hello there"] and report["changed"] == 1


SENTENCES = [
    "The quiet harbour town wakes slowly as fishing boats return with the morning catch.",
    "A documentary about glaciers that is both beautiful and deeply alarming to watch.",
    "这部电影的摄影非常出色，演员的表演也很自然，值得一看。",
    "Completely unrelated sentence about the price of train tickets in winter months.",
]


def test_exact_and_near_duplicates_in_english_and_chinese():
    rows = [{"text": t, "label": "x"} for t in SENTENCES]
    rows += [
        {"text": "  the QUIET harbour town wakes slowly as fishing boats return with the morning catch. ", "label": "x"},
        {"text": "A documentary about glaciers that is both beautiful and deeply alarming to watch!", "label": "x"},
        {"text": "这部电影的摄影非常出色，演员的表演也很自然，很值得一看。", "label": "x"},
    ]
    kept, report = deduplicate(rows, DedupConfig(exact=True, near=False))
    assert report["exact_duplicates"] == 1 and len(kept) == 6
    kept, report = deduplicate(rows, DedupConfig(exact=True, near=True, threshold=0.7))
    assert [r["text"] for r in kept] == SENTENCES  # the first occurrence of each survives
    assert report["exact_duplicates"] == 1 and report["near_duplicates"] == 2
    assert {e["kind"] for e in report["examples"]} == {"exact", "near"}


def test_leakage_finds_eval_rows_seen_in_training():
    train = [{"text": t, "label": "x"} for t in SENTENCES]
    evaluation = [{"text": SENTENCES[0].upper(), "label": "x"},
                  {"text": SENTENCES[2].replace("值得一看", "很值得一看"), "label": "x"},
                  {"text": "An entirely new review with no counterpart in the training data at all.", "label": "x"}]
    indices, report = leakage(train, evaluation, near=False, threshold=0.7, ngram=5)
    assert indices == [0] and report["exact"] == 1 and report["near"] == 0
    indices, report = leakage(train, evaluation, near=True, threshold=0.7, ngram=5)
    assert indices == [0, 1] and report["near"] == 1


def test_pipeline_cleans_dedups_and_removes_leaked_eval_rows(tmp_path):
    train = [{"text": f"review number {i} says the film was {'good' if i % 2 else 'bad'}", "label": "pos" if i % 2 else "neg"}
             for i in range(40)]
    train += [{"text": "Review   number 3 says the film was good", "label": "pos"}]  # exact duplicate after cleaning
    evaluation = [{"text": "review number 5 says the film was good", "label": "pos"},  # leaked
                  {"text": "a fresh eval sentence", "label": "neg"}]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in evaluation))
    cfg = DataConfig(train=["train.jsonl"], eval=["eval.jsonl"], clean=CleanConfig(), dedup=DedupConfig(),
                     leakage="remove")
    data = prepare_data(cfg, "classification", seed=1, base_dir=tmp_path)
    assert data.info["dedup"]["exact_duplicates"] == 1 and len(data.train) == 40
    assert data.info["leakage"]["exact"] == 1 and data.info["leakage"]["removed"] == 1
    assert [r["text"] for r in data.eval] == ["a fresh eval sentence"]
    report = prepare_data(cfg.model_copy(update={"leakage": "report"}), "classification", seed=1, base_dir=tmp_path)
    assert len(report.eval) == 2 and report.info["leakage"]["examples"] == ["review number 5 says the film was good"]


def _leaky(tmp_path):
    train = [{"text": f"sentence {i} about the film", "label": "pos" if i % 2 else "neg"} for i in range(30)]
    evaluation = train[:5] + [{"text": f"unseen sentence {i}", "label": "neg"} for i in range(15)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in evaluation))
    return DataConfig(train=["train.jsonl"], eval=["eval.jsonl"])


def test_leakage_error_names_the_rows(tmp_path):
    from tunesmith.errors import DataError

    with pytest.raises(DataError, match=r"5 of the 20 eval rows also occur in the training sources "
                                        r"\(5 exact, 0 near duplicates\), e.g. 'sentence 0 about the film'"):
        prepare_data(_leaky(tmp_path).model_copy(update={"leakage": "error"}), "classification", seed=1,
                     base_dir=tmp_path)


def test_leakage_counts_describe_the_eval_set_the_run_uses(tmp_path):
    cfg = _leaky(tmp_path).model_copy(update={"max_eval_samples": 8})
    data = prepare_data(cfg, "classification", seed=1, base_dir=tmp_path)
    leaked = sum(r["text"].startswith("sentence") for r in data.eval)
    assert len(data.eval) == 8 and data.info["leakage"]["eval_rows"] == 8
    assert data.info["leakage"]["exact"] == leaked
