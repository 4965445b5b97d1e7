"""Recipes are untrusted input (docs/SECURITY.md): values that would escape a folder, delete
another one, train for ever or hang the error message are refused before anything runs,
each with a message naming its key."""

from __future__ import annotations

import os

import pytest

from tunesmith.compare import parse_variants
from tunesmith.config.load import load_recipe, validate_recipe
from tunesmith.errors import ConfigError
from tunesmith.rundir import check_run_dir, lock_run_dir

BASE = {"name": "x", "task": "classification", "model": {"name": "m"}, "data": {"train": "a.jsonl"}}


def _refused(**changes) -> str:
    raw = {**BASE, **{k: v for k, v in changes.items() if "." not in k}}
    for key, value in changes.items():
        if "." in key:
            section, field = key.split(".", 1)
            raw[section] = {**raw.get(section, {}), field: value}
    with pytest.raises(ConfigError) as refused:
        validate_recipe(raw)
    return str(refused.value)


@pytest.mark.parametrize("name", ["", ".", "..", "../../x", "/tmp/x", "a/b", "-x", "x" * 200, "a\x00b"])
def test_a_run_name_is_one_folder_name(name):
    assert "name:" in _refused(name=name) and "not a folder name" in _refused(name=name)


@pytest.mark.parametrize("changes, key, words", [
    ({"train.lr": float("inf")}, "train.lr", "finite number"),
    ({"train.epochs": float("inf")}, "train.epochs", "finite number"),
    ({"train.lr": float("nan")}, "train.lr", "finite number"),
    ({"seed": 10**22}, "seed", "less than or equal to 4294967295"),
    ({"data.train": 5}, "data.train", "valid list"),
    ({"data.train": []}, "data.train", "at least 1 item"),
    ({"data.eval_size": 1.5}, "data.eval_size", "a whole number >= 1), not 1.5"),
    ({"data.eval_size": 0.6, "data.test_size": 0.5}, "data", "leaves no training rows"),
    ({"data.clean": {"min_chars": 10, "max_chars": 5}}, "data.clean", "every row would be dropped"),
    ({"train.max_steps": 1e23}, "train.max_steps", "integer"),
    ({"train.batch_size": True}, "train.batch_size", "whole number"),
])
def test_nonsensical_values_are_refused_naming_their_key(changes, key, words):
    message = _refused(**changes)
    assert f"- {key}:" in message and words in message


def test_a_yaml_alias_bomb_is_refused_with_a_short_message(tmp_path):
    levels = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        levels.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join("_" + line for line in levels) + "\nname: x\ntask: classification\n"
                    "model: {name: m}\ndata: {train: a.jsonl, labels: *i}\n")
    with pytest.raises(ConfigError) as refused:
        load_recipe(bomb)
    assert "data.labels" in str(refused.value) and len(str(refused.value)) < 3000  # 9**9 strings never printed
    many = tmp_path / "aliases.yaml"
    many.write_text("base: &b 1\nitems: [" + ", ".join(["*b"] * 101) + "]\n")
    with pytest.raises(ConfigError, match="more than 100 aliases"):
        load_recipe(many)


def test_a_directory_or_binary_file_given_as_recipe_says_so(tmp_path):
    with pytest.raises(ConfigError, match="is a directory, not a recipe file"):
        load_recipe(tmp_path)
    binary = tmp_path / "model.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ConfigError, match="not a UTF-8 text file"):
        load_recipe(binary)


def test_overwrite_deletes_only_folders_tunesmith_made(tmp_path):
    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "holiday.jpg").write_bytes(b"jpeg")
    with pytest.raises(ConfigError, match="not a run directory Tunesmith made"):
        check_run_dir(mine, overwrite=True, resume=None)
    assert (mine / "holiday.jpg").is_file()
    run = tmp_path / "run"
    run.mkdir()
    (run / ".tunesmith-run").write_text("")
    (run / "metrics.jsonl").write_text("")
    check_run_dir(run, overwrite=True, resume=None)  # a run directory may be replaced


def test_a_held_run_directory_refuses_a_second_run_naming_the_holder(tmp_path):
    with lock_run_dir(tmp_path / "run"):
        with pytest.raises(ConfigError, match=f"in use by another tunesmith process \\(pid {os.getpid()}\\)"):
            with lock_run_dir(tmp_path / "run"):
                pass
    with lock_run_dir(tmp_path / "run"):  # released: the next run takes it
        pass


@pytest.mark.parametrize("label", ["..", "a/b", ""])
def test_a_compare_label_is_one_folder_name(label):
    with pytest.raises(ConfigError):
        parse_variants(None, [f'{label}={{"type": "lora"}}'], False, "bert")



def test_remote_code_is_a_cli_flag_never_a_recipe_value(tmp_path):
    from tunesmith.cli import build_parser
    from tunesmith.config.load import allow_remote_code, dump_recipe

    message = _refused(**{"model.trust_remote_code": True})
    assert "- model.trust_remote_code: a recipe cannot switch on remote code" in message
    assert "--trust-remote-code" in message
    config = validate_recipe(BASE)
    allowed = allow_remote_code(config)
    assert allowed.model.trust_remote_code and not config.model.trust_remote_code
    dump_recipe(allowed, tmp_path / "config.yaml")  # a run's config.yaml does not carry the permission
    assert "trust_remote_code" not in (tmp_path / "config.yaml").read_text()
    assert load_recipe(tmp_path / "config.yaml").model.trust_remote_code is False
    assert build_parser().parse_args(["train", "r.yaml", "--trust-remote-code"]).trust_remote_code
