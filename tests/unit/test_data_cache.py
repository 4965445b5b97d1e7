"""The tokenized-data cache: a second run with the same inputs skips preprocessing and
trains identically; any change to a source, the data section or the tokenizer misses."""

from __future__ import annotations

import json

import pytest

from tunesmith.cli import main


@pytest.fixture()
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNESMITH_DATA_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _summary(tmp_path, name):
    return json.loads((tmp_path / "runs" / name / "summary.json").read_text())


def _train(recipe, *extra):
    return main(["train", str(recipe), "--set", "train.epochs=1", "--overwrite", *extra])


def test_second_run_hits_the_cache_and_trains_identically(cls_recipe, tmp_path, private_cache, monkeypatch):
    assert _train(cls_recipe) == 0
    first = _summary(tmp_path, "tiny-cls")
    assert first["data"]["cache"]["hit"] is False
    first_metrics = (tmp_path / "runs" / "tiny-cls" / "metrics.jsonl").read_text()

    # Prove preprocessing is skipped: the data stage would fail if it ran.
    import tunesmith.features as features

    monkeypatch.setattr(features, "prepare_data", lambda *a, **k: pytest.fail("preprocessing ran despite the cache"))
    assert _train(cls_recipe) == 0
    second = _summary(tmp_path, "tiny-cls")
    assert second["data"]["cache"] == {"key": first["data"]["cache"]["key"], "hit": True}
    losses = [json.loads(line)["loss"] for line in (tmp_path / "runs" / "tiny-cls" / "metrics.jsonl").read_text().splitlines()]
    assert losses == [json.loads(line)["loss"] for line in first_metrics.splitlines()]
    assert second["eval_after"] == first["eval_after"]
    assert second["data"]["label_counts"] == first["data"]["label_counts"]


def test_any_change_invalidates(cls_recipe, tmp_path, private_cache):
    assert _train(cls_recipe) == 0
    key = _summary(tmp_path, "tiny-cls")["data"]["cache"]["key"]
    train = tmp_path / "train.jsonl"
    train.write_text(train.read_text().replace("wonderful", "marvellous", 1))
    assert _train(cls_recipe) == 0
    changed_file = _summary(tmp_path, "tiny-cls")["data"]["cache"]
    assert changed_file["hit"] is False and changed_file["key"] != key
    assert _train(cls_recipe, "--set", "data.max_length=24") == 0
    assert _summary(tmp_path, "tiny-cls")["data"]["cache"]["hit"] is False
    assert _train(cls_recipe, "--set", "data.cache=false") == 0
    assert _summary(tmp_path, "tiny-cls")["data"]["cache"] is None


def test_tokenizer_changes_change_the_key(tiny_llama_dir):
    from tunesmith.data.cache import tokenizer_digest
    from tunesmith.models.load import load_tokenizer

    tok = load_tokenizer(str(tiny_llama_dir))
    before = tokenizer_digest(tok)
    tok.chat_template = "{{ messages[0]['content'] }}"
    assert tokenizer_digest(tok) != before
