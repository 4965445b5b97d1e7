"""More dataset shapes: Parquet, saved ``datasets`` folders, raw .txt, preference pairs,
sentence pairs; and continued pretraining on raw text end to end."""

from __future__ import annotations

import json

import pytest
import yaml

from tunesmith.data.sources import load_records
from tunesmith.errors import DataError


def test_parquet_rows_are_validated_with_row_numbers(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"text": ["good", "", "bad"], "label": ["pos", "pos", "neg"]})
    pq.write_table(table, tmp_path / "d.parquet")
    rejects: list[dict] = []
    rows = load_records(str(tmp_path / "d.parquet"), "classification", on_error="drop", rejects=rejects)
    assert [r["text"] for r in rows] == ["good", "bad"] and rejects[0]["where"] == "row 2"


def test_saved_datasets_folder_and_split_selection(tmp_path):
    from datasets import Dataset, DatasetDict

    chats = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
             for i in range(4)]
    DatasetDict({"train": Dataset.from_list(chats), "test": Dataset.from_list(chats[:1])}).save_to_disk(tmp_path / "ds")
    assert len(load_records(str(tmp_path / "ds"), "chat")) == 4  # "train" by default
    assert len(load_records(f"{tmp_path / 'ds'}:test", "chat")) == 1
    (tmp_path / "plain").mkdir()
    with pytest.raises(DataError, match="save_to_disk"):
        load_records(str(tmp_path / "plain"), "chat")


def test_raw_text_per_line_or_per_delimiter(tmp_path):
    (tmp_path / "lines.txt").write_text("first document\n\nsecond document\n")
    assert [r["text"] for r in load_records(str(tmp_path / "lines.txt"), "text")] == ["first document", "second document"]
    (tmp_path / "fortunes.txt").write_text("one\nstill one\n%\ntwo\n%\n\n%\nthree\n")
    rows = load_records(str(tmp_path / "fortunes.txt"), "text", text_delimiter="\n%\n")
    assert [r["text"] for r in rows] == ["one\nstill one", "two", "three"]
    assert [r["_where"].rsplit(" ", 1)[1] for r in rows] == ["1", "4", "8"]
    with pytest.raises(DataError, match="raw text"):
        load_records(str(tmp_path / "lines.txt"), "chat")


def test_preference_pairs_strings_or_messages(tmp_path):
    rows = [
        {"prompt": "2+2?", "chosen": "4", "rejected": "5"},
        {"prompt": [{"role": "user", "content": "hi"}], "chosen": [{"role": "assistant", "content": "hello!"}],
         "rejected": [{"role": "assistant", "content": "go away"}]},
        {"prompt": "x", "chosen": "same", "rejected": "same"},
        {"prompt": "x", "chosen": "y"},
        {"prompt": "x", "chosen": [{"role": "user", "content": "no answer"}], "rejected": "z"},
    ]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    rejects: list[dict] = []
    good = load_records(str(tmp_path / "p.jsonl"), "preference", on_error="drop", rejects=rejects)
    assert [r["chosen"] for r in good] == ["4", [{"role": "assistant", "content": "hello!"}]]
    reasons = {r["line"]: r["reasons"][0] for r in rejects}
    assert "same as 'chosen'" in reasons[3] and "'rejected' is missing" in reasons[4]
    assert "no assistant turn" in reasons[5]


def test_sentence_pairs_are_encoded_with_segment_ids(tmp_path, tiny_bert_dir):
    from tunesmith.models.load import load_tokenizer
    from tunesmith.objectives.classification import ClassificationObjective

    (tmp_path / "nli.jsonl").write_text(
        json.dumps({"text": "a man sleeps", "text_pair": "a person rests", "label": "entailment"}) + "\n"
        + json.dumps({"text": "single sentence", "label": "neutral"}) + "\n")
    rows = load_records(str(tmp_path / "nli.jsonl"), "classification")
    assert rows[0]["text_pair"] == "a person rests" and "text_pair" not in rows[1]
    objective = ClassificationObjective(load_tokenizer(str(tiny_bert_dir)), ["entailment", "neutral"], 32)
    features = objective.encode(rows)
    assert features[0]["input_ids"].count(objective.tokenizer.sep_token_id) == 2
    assert set(features[0]["token_type_ids"]) == {0, 1} and "token_type_ids" not in features[1]
    batch = objective.collate(features)
    assert batch["token_type_ids"][1].sum() == 0


def test_continued_pretraining_on_raw_text(tmp_path, tiny_llama_dir):
    from tunesmith.cli import main

    docs = ["the lighthouse keeper climbed the stairs every evening to light the lamp",
            "fishing boats returned at dawn with nets full of silver herring",
            "storms in the north sea can last for days and keep every boat in harbour"]
    (tmp_path / "docs.txt").write_text("\n%\n".join(docs * 20))
    recipe = {"name": "cpt", "task": "pretrain", "seed": 3, "output_dir": str(tmp_path / "runs"),
              "model": {"name": str(tiny_llama_dir)},
              "data": {"train": "docs.txt", "text_delimiter": "\n%\n", "eval_size": 6, "max_length": 16,
                       "packing": True},
              "method": {"type": "lora", "r": 8, "alpha": 16, "dropout": 0.0},
              "train": {"epochs": 4, "batch_size": 4, "lr": 2e-2},
              "eval": {"probes": ["the lighthouse keeper"], "max_new_tokens": 6}}
    (tmp_path / "cpt.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["train", str(tmp_path / "cpt.yaml")]) == 0
    summary = json.loads((tmp_path / "runs" / "cpt" / "summary.json").read_text())
    assert summary["task"] == "pretrain"
    assert summary["eval_after"]["perplexity"] < 0.5 * summary["eval_before"]["perplexity"]
    assert summary["data"]["overlength_train"]["rows"] > 0  # long documents were chunked, not cut
    meta = json.loads((tmp_path / "runs" / "cpt" / "final" / "tunesmith.json").read_text())
    assert meta["task"] == "causal_lm" and meta["stage"] == "pretrain"
    assert summary["probes"][0]["after"] != summary["probes"][0]["before"]


def test_chat_column_name_is_configurable(tmp_path):
    rows = [{"dialog": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
            {"dialog": [{"from": "human", "value": "yo"}, {"from": "gpt", "value": "hey"}]}]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = load_records(str(tmp_path / "c.jsonl"), "chat", messages_field="dialog")
    assert [r["messages"][1]["content"] for r in got] == ["hello", "hey"]
