"""Augmentation: EDA operations (English and Chinese), the synonym table, the
back-translation hook, and that augmented rows are marked and only ever in training."""

from __future__ import annotations

import json
import random

import pytest

from tunesmith.config.schema import AugmentConfig, DataConfig
from tunesmith.data.augment import augment_rows, random_delete, random_swap, synonym_replace, synonym_table
from tunesmith.data.pipeline import prepare_data
from tunesmith.errors import ConfigError


def paraphrase(texts):
    """A stand-in back-translation model for the hook test."""
    return [t.replace("film", "movie") + " (paraphrased)" for t in texts]


def test_synonym_replacement_keeps_case_and_punctuation():
    assert "movie" in synonym_table()["film"]
    out = synonym_replace("A great film, truly.", 1.0, random.Random(0))
    words = out.split()
    assert words[0] == "A" and words[1] != "great" and words[1] in synonym_table()["great"]
    assert words[2].endswith(",") and words[2][:-1] in synonym_table()["film"]
    assert synonym_replace("Xyzzy plugh.", 1.0, random.Random(0)) == "Xyzzy plugh."


def test_swap_and_delete_work_on_words_and_on_chinese_characters():
    rng = random.Random(1)
    swapped = random_swap("one two three four", 0.25, rng)
    assert sorted(swapped.split()) == sorted("one two three four".split()) and swapped != "one two three four"
    deleted = random_delete("这部电影非常好看", 0.3, random.Random(2))
    assert len(deleted) < 8 and all(ch in "这部电影非常好看" for ch in deleted) and " " not in deleted
    assert random_delete("word", 0.9, rng) == "word"


def test_augmented_rows_are_marked_and_originals_kept():
    rows = [{"text": "a great film", "label": "pos"}, {"text": "a boring movie", "label": "neg"},
            {"text": "xyzzy", "label": "neg"}]
    out, report = augment_rows(rows, AugmentConfig(copies=2, synonym_rate=0.5), seed=3)
    assert out[:3] == rows
    assert report["augmented_rows"] == 4 and report["by_operation"] == {"synonym": 4}  # "xyzzy" has no synonyms
    for row in out[3:]:
        assert row["augmented"] == "synonym" and row["label"] == rows[row["augmented_from"]]["label"]
        assert row["text"] != rows[row["augmented_from"]]["text"]


def test_back_translation_hook_and_chat_rows():
    chats = [{"messages": [{"role": "user", "content": "rate this film"}, {"role": "assistant", "content": "film: 5/5"}]}]
    out, report = augment_rows(chats, AugmentConfig(synonym_rate=0, back_translation=f"{__name__}:paraphrase"), seed=0)
    assert out[1]["messages"][0]["content"] == "rate this movie (paraphrased)"
    assert out[1]["messages"][1]["content"] == "film: 5/5"  # answers are never changed
    assert out[1]["augmented"] == "back_translation"
    with pytest.raises(ConfigError, match="cannot be imported"):
        augment_rows(chats, AugmentConfig(back_translation="no.such.module:fn"), seed=0)


def test_pipeline_augments_training_rows_only(tmp_path):
    rows = [{"text": f"a great film number {i}", "label": "pos" if i % 2 else "neg"} for i in range(40)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = DataConfig(train=["d.jsonl"], eval_size=0.25, augment=AugmentConfig(synonym_rate=0.5))
    data = prepare_data(cfg, "classification", seed=1, base_dir=tmp_path)
    assert len(data.eval) == 10 and not any("augmented" in r for r in data.eval)
    augmented = [r for r in data.train if "augmented" in r]
    assert len(augmented) == 30 and len(data.train) == 60
    eval_texts = {r["text"] for r in data.eval}
    originals = [r for r in data.train if "augmented" not in r]
    assert all(originals[r["augmented_from"]]["text"] not in eval_texts for r in augmented)
    assert data.info["augment"]["d.jsonl"]["augmented_rows"] == 30
