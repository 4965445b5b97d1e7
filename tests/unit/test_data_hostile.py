"""Data files are untrusted input: one bad row is one reject naming its line, never a refused
file or a traceback (docs/SECURITY.md). Includes a property-based fuzz of JSONL rows."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunesmith.data.sources import load_records
from tunesmith.errors import DataError


def _load(path, rejects=None):
    rejects = [] if rejects is None else rejects
    rows = load_records(str(path), "classification", on_error="quarantine", rejects=rejects)
    return rows, {r["where"]: r["reasons"] for r in rejects}


def test_a_bad_byte_or_a_huge_cell_in_a_csv_costs_one_row(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_bytes(b"text,label\ngood one,pos\nbad \xff byte,neg\nfine,neg\n" + b"huge " * 40_000 + b",pos\n")
    rows, rejects = _load(path)
    assert [r["text"][:8] for r in rows] == ["good one", "fine", "huge hug"]
    assert len(rows[2]["text"]) == 200_000 - 1  # the 200,000-character cell is kept whole
    assert list(rejects) == ["line 3"] and "not valid UTF-8 (byte 0xff)" in rejects["line 3"][0]


def test_an_unclosed_quote_is_reported_at_its_line(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text('text,label\nfine,pos\n"starts here,neg\nswallowed,pos\nand this,neg\n')
    with pytest.raises(DataError, match="line 3 opens a double quote that is never closed"):
        _load(path)


@pytest.mark.parametrize("line, reason", [
    ('{"text": ' + "9" * 5000 + ', "label": "pos"}', "Exceeds the limit"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('{"text": "\\ud800 broken", "label": "pos"}', "lone surrogate (\\ud800)"),
])
def test_hostile_jsonl_rows_are_rejects_naming_their_line(tmp_path, line, reason):
    path = tmp_path / "rows.jsonl"
    good = json.dumps({"text": "fine", "label": "pos"})
    path.write_text("\n".join([good, line, good.replace("pos", "neg")]) + "\n")
    rows, rejects = _load(path)
    assert [r["label"] for r in rows] == ["pos", "neg"]
    assert list(rejects) == ["line 2"] and reason in rejects["line 2"][0]


def test_a_json_file_with_a_surrogate_row_rejects_that_row(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text('[{"text": "ok", "label": "pos"}, {"text": "\\udfff", "label": "neg"}, {"text": "b", "label": "neg"}]')
    rows, rejects = _load(path)
    assert len(rows) == 2 and list(rejects) == ["index 1"]


ROW_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
                          lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                        max_size=3), max_leaves=8)
LINES = st.one_of(
    st.fixed_dictionaries({"text": st.text(max_size=20) | ROW_VALUES, "label": st.sampled_from(["pos", "neg"]) | ROW_VALUES})
    .map(json.dumps),
    ROW_VALUES.map(json.dumps),
    st.binary(max_size=30).map(lambda b: b.replace(b"\n", b" ").decode("latin-1")),
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(LINES, min_size=1, max_size=8))
def test_any_jsonl_lines_become_rows_or_rejects_naming_their_line(tmp_path, lines):
    path = tmp_path / "fuzz.jsonl"
    anchor = json.dumps({"text": "anchor row", "label": "pos"})
    path.write_bytes("\n".join([anchor, *lines]).encode("utf-8", "surrogatepass") + b"\n")
    rejects: list = []
    rows = load_records(str(path), "classification", on_error="quarantine", rejects=rejects)
    blank = sum(1 for line in lines if not line.strip())
    assert len(rows) + len(rejects) == 1 + len(lines) - blank  # every line: a row or a reject
    assert all(r["where"].startswith("line ") for r in rejects)
