"""Augmentation: EDA operations (English and Chinese), the synonym table, named
back-translators (registered, from plugins, never import paths), and that augmented rows
are marked and only ever in training."""

from __future__ import annotations

import json
import random

import pytest

from tunesmith.config.load import validate_recipe
from tunesmith.config.schema import AugmentConfig, DataConfig
from tunesmith.data import paraphrase
from tunesmith.data.augment import augment_rows, random_delete, random_swap, synonym_replace, synonym_table
from tunesmith.data.pipeline import prepare_data
from tunesmith.errors import ConfigError


def fake_back_translation(texts):
    """A stand-in back-translation model (the built-ins download models from the hub)."""
    return [t.replace("film", "movie") + " (paraphrased)" for t in texts]


@pytest.fixture()
def registry(monkeypatch):
    """A private copy of the back-translator registry: what a test registers is gone after it."""
    monkeypatch.setattr(paraphrase, "BACK_TRANSLATORS", dict(paraphrase.BACK_TRANSLATORS))
    monkeypatch.setattr(paraphrase, "_LOADED_PLUGINS", [])
    return paraphrase.BACK_TRANSLATORS


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


def test_registered_back_translator_and_chat_rows(registry):
    paraphrase.register_back_translator("test-paraphraser", fake_back_translation)
    chats = [{"messages": [{"role": "user", "content": "rate this film"}, {"role": "assistant", "content": "film: 5/5"}]}]
    out, report = augment_rows(chats, AugmentConfig(synonym_rate=0, back_translation="test-paraphraser"), seed=0)
    assert out[1]["messages"][0]["content"] == "rate this movie (paraphrased)"
    assert out[1]["messages"][1]["content"] == "film: 5/5"  # answers are never changed
    assert out[1]["augmented"] == "back_translation"
    assert report["by_operation"] == {"back_translation": 1}


def test_a_back_translator_must_return_one_string_per_text(registry):
    paraphrase.register_back_translator("drops-one", lambda texts: texts[1:])
    rows = [{"text": "a great film", "label": "pos"}, {"text": "a dull plot", "label": "neg"}]
    with pytest.raises(ConfigError, match="'drops-one' must return one string per input text"):
        augment_rows(rows, AugmentConfig(back_translation="drops-one"), seed=0)


@pytest.mark.parametrize("value", ["os.path:join", "os:system", "pkg.mod:fn-v2", "tests.unit.test_data_augment:x.y"])
def test_a_recipe_cannot_name_code_to_import(value):
    recipe = {"name": "t", "task": "classification", "model": {"name": "builtin:minilm"},
              "data": {"train": "builtin:rt-snippets", "augment": {"back_translation": value}}}
    with pytest.raises(ConfigError) as info:
        validate_recipe(recipe)
    message = str(info.value)
    assert "data.augment.back_translation" in message
    assert f"{value!r} looks like an import path, and recipes cannot name code to import" in message
    assert "--plugin NAME" in message and "register_back_translator()" in message
    # The built-in names have a colon too, and stay valid.
    recipe["data"]["augment"]["back_translation"] = "opus-mt:en-de"
    assert validate_recipe(recipe).data.augment.back_translation == "opus-mt:en-de"


def test_names_shaped_like_import_paths_cannot_be_registered(registry):
    with pytest.raises(ValueError, match="not allowed"):
        paraphrase.register_back_translator("os.path:join", fake_back_translation)
    with pytest.raises(TypeError, match="must be a function"):
        paraphrase.register_back_translator("not-callable", "a string")
    assert "os.path:join" not in registry and "not-callable" not in registry


def test_an_unknown_back_translator_names_the_available_ones(registry):
    paraphrase.register_back_translator("test-paraphraser", fake_back_translation)
    rows = [{"text": "a great film", "label": "pos"}]
    with pytest.raises(ConfigError) as info:
        augment_rows(rows, AugmentConfig(back_translation="no-such-translator"), seed=0)
    message = str(info.value)
    assert "'no-such-translator' is not a known back-translator" in message
    assert "available: opus-mt:en-de, opus-mt:en-fr, opus-mt:en-zh, opus-mt:zh-en, test-paraphraser" in message
    assert "--plugin NAME" in message


def test_the_built_ins_are_opus_mt_round_trips(monkeypatch):
    # The real models come from the hub, which tests cannot reach: record the translation calls.
    calls = []

    def translate(model_id, texts, target_token=""):
        calls.append((model_id, list(texts), target_token))
        return [f"{t}|{model_id[-5:]}" for t in texts]

    monkeypatch.setattr(paraphrase, "translate", translate)
    assert paraphrase.get_back_translator("opus-mt:en-zh")(["a film", "a plot"]) == [
        "a film|en-zh|zh-en", "a plot|en-zh|zh-en"]
    assert calls == [("Helsinki-NLP/opus-mt-en-zh", ["a film", "a plot"], ">>cmn_Hans<<"),
                     ("Helsinki-NLP/opus-mt-zh-en", ["a film|en-zh", "a plot|en-zh"], ">>eng<<")]
    calls.clear()
    paraphrase.get_back_translator("opus-mt:zh-en")(["好电影"])
    assert [c[0] for c in calls] == ["Helsinki-NLP/opus-mt-zh-en", "Helsinki-NLP/opus-mt-en-zh"]
    assert calls[1][2] == ">>cmn_Hans<<"  # the English -> Chinese model serves several Chinese variants
    assert {"opus-mt:en-de", "opus-mt:en-fr"} <= set(paraphrase.BACK_TRANSLATORS)


class FakeEntryPoint:
    """What importlib.metadata.entry_points() yields: a name, a value, and load()."""

    def __init__(self, name, fn):
        self.name, self.value, self.fn, self.loaded = name, f"fakepkg.module:{name}", fn, False

    def load(self):
        self.loaded = True
        return self.fn


def test_load_plugins_loads_only_the_named_entry_points(registry, monkeypatch):
    wanted = FakeEntryPoint("fake-bt", fake_back_translation)
    other = FakeEntryPoint("other-bt", lambda texts: texts)
    groups = []

    def entry_points(group):
        groups.append(group)
        return [wanted, other]

    monkeypatch.setattr(paraphrase, "entry_points", entry_points)
    assert paraphrase.load_plugins([]) == [] and groups == [] and "fake-bt" not in registry

    assert paraphrase.load_plugins(["fake-bt"]) == ["fake-bt"]
    assert groups == ["tunesmith.back_translators"]
    assert wanted.loaded and not other.loaded  # an installed plugin nobody named never runs
    assert paraphrase.get_back_translator("fake-bt") is fake_back_translation
    assert "other-bt" not in registry
    assert paraphrase.loaded_plugins() == ["fake-bt"]
    cfg = AugmentConfig(synonym_rate=0, back_translation="fake-bt")
    out, _ = augment_rows([{"text": "a film", "label": "pos"}], cfg, seed=0)
    assert out[1]["text"] == "a movie (paraphrased)"

    with pytest.raises(ConfigError, match=r"--plugin missing-bt: .*\(installed: fake-bt, other-bt\)"):
        paraphrase.load_plugins(["missing-bt"])


def test_the_cli_loads_plugins_before_the_recipe_runs(registry, monkeypatch, tmp_path, capsys):
    from tunesmith.cli import main

    monkeypatch.setattr(paraphrase, "entry_points", lambda group: [FakeEntryPoint("fake-bt", fake_back_translation)])
    rows = [{"text": f"a great film number {i}", "label": "pos" if i % 2 else "neg"} for i in range(20)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = {"name": "t", "task": "classification", "model": {"name": "builtin:minilm"},
              "data": {"train": "d.jsonl", "eval_size": 0.25,
                       "augment": {"synonym_rate": 0, "back_translation": "fake-bt"}}}
    (tmp_path / "r.yaml").write_text(json.dumps(recipe))
    out = tmp_path / "prepared"
    assert main(["data", "prepare", str(tmp_path / "r.yaml"), "--out", str(out)]) == 2
    assert "'fake-bt' is not a known back-translator" in capsys.readouterr().err  # installed, but not named
    assert main(["data", "prepare", str(tmp_path / "r.yaml"), "--out", str(out), "--plugin", "fake-bt"]) == 0
    train = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert sum(r.get("augmented") == "back_translation" for r in train) == 15
    assert all(r["text"].endswith("(paraphrased)") for r in train if "augmented" in r)


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


def test_preference_rows_augment_the_prompt_and_keep_both_answers():
    rows = [{"prompt": "Tell me about the good movie tonight.", "chosen": "It is good.", "rejected": "No."},
            {"prompt": [{"role": "user", "content": "Is the film good?"}],
             "chosen": [{"role": "assistant", "content": "Yes, good."}], "rejected": "No."}]
    out, report = augment_rows(rows, AugmentConfig(copies=2, synonym_rate=1.0), seed=3)
    copies = [r for r in out if r.get("augmented")]
    assert len(out) == 6 and len(copies) == 4
    for row in copies:
        original = rows[row["augmented_from"]]
        assert (row["chosen"], row["rejected"]) == (original["chosen"], original["rejected"])
        assert row["prompt"] != original["prompt"]
