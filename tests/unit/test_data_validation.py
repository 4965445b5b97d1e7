"""A corpus of deliberately broken files: every defect is reported at its line with its
field and reason, nothing valid is lost, and valid + rejected = rows read."""

from __future__ import annotations

import json

import pytest

from tunesmith.config.schema import DataConfig
from tunesmith.data.pipeline import prepare_data
from tunesmith.data.sources import load_records
from tunesmith.errors import DataError

U, A = "user", "assistant"


def _msgs(*turns):
    return {"messages": [{"role": r, "content": c} for r, c in turns]}


# line number -> (raw line bytes, expected code or None for a valid row)
CHAT_LINES = {
    1: (json.dumps(_msgs((U, "hi"), (A, "hello"))).encode(), None),
    2: (b'{"messages": [{"role": "user", "content": "unterminated}', "invalid_json"),
    3: (b'{"messages": [{"role": "user", "content": "caf\xe9"}, {"role": "assistant", "content": "x"}]}', "invalid_utf8"),
    4: (json.dumps({"prompt": "where are the messages?"}).encode(), "missing_field"),
    5: (json.dumps({"messages": [{"role": U, "content": 5}, {"role": A, "content": "x"}]}).encode(), "wrong_type"),
    6: (json.dumps(_msgs((U, "   "), (A, "x"))).encode(), "empty_field"),
    7: (json.dumps(_msgs(("wizard", "abracadabra"), (A, "x"))).encode(), "unknown_role"),
    8: (json.dumps(_msgs((U, "one"), (U, "two"), (A, "x"))).encode(), "repeated_turn"),
    9: (json.dumps(_msgs(("system", "be nice"), (U, "anyone there?"))).encode(), "no_assistant_turn"),
    10: (json.dumps({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}).encode(), None),
    11: (json.dumps({"instruction": "add", "input": "2+2", "output": "4", "history": [["hi", "hello"]]}).encode(), None),
    12: (b"", None),  # blank: not a row
    13: (json.dumps({"conversations": [{"from": "robot", "value": "q"}, {"from": "gpt", "value": "a"}]}).encode(),
         "unknown_role"),
    14: (json.dumps({"instruction": "x", "output": "y", "history": "not pairs"}).encode(), "wrong_type"),
    15: (json.dumps(_msgs((U, "bye"), (A, "goodbye"))).encode(), None),
}
VALID_CHAT_LINES = [1, 10, 11, 15]


@pytest.fixture()
def broken_chat(tmp_path):
    path = tmp_path / "chats.jsonl"
    path.write_bytes(b"\n".join(CHAT_LINES[i][0] for i in sorted(CHAT_LINES)) + b"\n")
    return path


def test_raise_lists_every_defect_with_its_line(broken_chat):
    with pytest.raises(DataError) as err:
        load_records(str(broken_chat), "chat")
    message = str(err.value)
    bad = [line for line, (_, code) in CHAT_LINES.items() if code]
    assert f"{len(bad)} invalid rows" in message
    for line in bad[:10]:  # the first ten are listed, the rest counted
        assert f"line {line}:" in message


def test_quarantine_reports_each_defect_and_keeps_every_valid_row(broken_chat):
    rejects: list[dict] = []
    records = load_records(str(broken_chat), "chat", on_error="quarantine", rejects=rejects)
    expected = {line: code for line, (raw, code) in CHAT_LINES.items() if code}
    assert {r["line"]: r["codes"] for r in rejects} == {line: [code] for line, code in expected.items()}
    assert [r["_where"].rsplit(" ", 1)[1] for r in records] == [str(line) for line in VALID_CHAT_LINES]
    rows_in_file = sum(1 for raw, _ in CHAT_LINES.values() if raw)
    assert len(records) + len(rejects) == rows_in_file
    by_line = {r["line"]: r for r in rejects}
    assert by_line[5]["fields"] == ["messages[0].content"]
    assert by_line[7]["fields"] == ["messages[0].role"] and "'wizard'" in by_line[7]["reasons"][0]
    assert "second 'user' turn in a row" in by_line[8]["reasons"][0]
    assert by_line[13]["fields"] == ["conversations[0].from"]
    assert "unterminated" in by_line[2]["row"]  # the raw text of an unparsable line is kept
    assert "caf\ufffd" in by_line[3]["row"]
    assert by_line[4]["row"] == {"prompt": "where are the messages?"}
    # sharegpt and alpaca-with-history rows became ordinary chats.
    assert [m["role"] for m in records[1]["messages"]] == ["user", "assistant"]
    assert [m["content"] for m in records[2]["messages"]] == ["hi", "hello", "add\n\n2+2", "4"]


CLS_ROWS = [
    '{"text": "great film", "label": "positive"}',                # 1 valid
    '{"text": "awful film"}',                                      # 2 missing label
    '{"text": "fine film", "label": "neutral"}',                   # 3 label outside the given set
    '{"text": "", "label": "negative"}',                           # 4 empty text
    '{"text": ["a", "list"], "label": "negative"}',                # 5 wrong type
    '{"text": "dull film", "label": "negative"}',                  # 6 valid
] + [f'{{"text": "filler {i}", "label": "{"positive" if i % 2 else "negative"}"}}' for i in range(194)]  # 7.. valid


def _config(path, **kwargs):
    return DataConfig(train=[str(path)], eval_size=0.1, labels=["negative", "positive"], **kwargs)


def test_pipeline_drop_counts_add_up_and_label_set_is_enforced(tmp_path):
    path = tmp_path / "cls.jsonl"
    path.write_text("\n".join(CLS_ROWS) + "\n")
    data = prepare_data(_config(path, on_error="drop"), "classification", seed=1)
    validation = data.info["validation"]
    assert validation["rows_read"] == len(CLS_ROWS)
    assert validation["rejected"] == 4 and validation["valid"] == len(CLS_ROWS) - 4
    assert validation["by_reason"] == {"missing_field": 1, "unknown_label": 1, "empty_field": 1, "wrong_type": 1}
    assert len(data.train) + len(data.eval) == validation["valid"]
    assert {r["line"] for r in data.rejects} == {2, 3, 4, 5}
    assert next(r for r in data.rejects if r["line"] == 3)["row"] == {"text": "fine film", "label": "neutral"}


def test_too_many_invalid_rows_stop_the_run(tmp_path):
    path = tmp_path / "cls.jsonl"
    path.write_text("\n".join(CLS_ROWS[:30]) + "\n")  # 4 of 30 invalid: 13%
    with pytest.raises(DataError, match=r"4 of 30 rows \(13.3%\) are invalid"):
        prepare_data(_config(path, on_error="drop"), "classification", seed=1)
    data = prepare_data(_config(path, on_error="drop", max_drop_fraction=0.2), "classification", seed=1)
    assert data.info["validation"]["rejected"] == 4


def test_csv_rows_with_extra_cells_and_bad_files_name_the_line(tmp_path):
    path = tmp_path / "cls.csv"
    path.write_text("text,label\ngood one,positive\nbad, unquoted, comma,negative\nfine,negative\n")
    rejects: list[dict] = []
    records = load_records(str(path), "classification", on_error="quarantine", rejects=rejects)
    assert [r["text"] for r in records] == ["good one", "fine"]
    assert rejects[0]["line"] == 3 and rejects[0]["codes"] == ["bad_csv_row"]
    broken = tmp_path / "latin1.csv"
    broken.write_bytes(b"text,label\nok,positive\ncaf\xe9,negative\n")
    bad_bytes: list[dict] = []  # one undecodable byte costs its row, not the file
    assert [r["text"] for r in load_records(str(broken), "classification", on_error="quarantine",
                                            rejects=bad_bytes)] == ["ok"]
    assert bad_bytes[0]["line"] == 3 and "not valid UTF-8 (byte 0xe9)" in bad_bytes[0]["reasons"][0]


@pytest.mark.parametrize("task", ["classification", "causal_lm"])
def test_overlength_rows_are_truncated_dropped_or_named(task, tiny_bert_dir, tiny_llama_dir):
    from tunesmith.models.load import load_tokenizer
    from tunesmith.objectives.causal_lm import CausalLMObjective
    from tunesmith.objectives.classification import ClassificationObjective

    long_text = " ".join(["word"] * 60)
    if task == "classification":
        tokenizer = load_tokenizer(str(tiny_bert_dir))
        rows = [{"text": "short one", "label": "a", "_where": "f.jsonl line 1"},
                {"text": long_text, "label": "b", "_where": "f.jsonl line 2"}]

        def make(policy):
            return ClassificationObjective(tokenizer, ["a", "b"], 16, policy)
    else:
        tokenizer = load_tokenizer(str(tiny_llama_dir))
        rows = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
                 "_where": "f.jsonl line 1"},
                {"messages": [{"role": "user", "content": "tell me"}, {"role": "assistant", "content": long_text}],
                 "_where": "f.jsonl line 2"}]

        def make(policy):
            return CausalLMObjective(tokenizer, 16, None, policy)

    truncate = make("truncate")
    features = truncate.encode(rows)
    assert len(features) == 2 and len(features[1]["input_ids"]) == 16
    assert truncate.overlength_report["rows"] == 1 and truncate.overlength_report["examples"] == ["f.jsonl line 2"]
    if task == "classification":  # truncation keeps the closing [SEP]
        assert features[1]["input_ids"][-1] == tokenizer.sep_token_id
    drop = make("drop")
    assert [len(f["input_ids"]) for f in drop.encode(rows)] == [len(features[0]["input_ids"])]
    with pytest.raises(DataError, match="1 rows are longer than data.max_length=16 tokens \\(f.jsonl line 2\\)"):
        make("raise").encode(rows)
