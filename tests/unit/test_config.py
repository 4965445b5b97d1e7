"""Recipe schema and loading: strict keys with suggestions, cross-field rules, overrides, paths."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tunesmith.config.load import _anchor_data_paths, apply_overrides, dump_recipe, load_recipe, validate_recipe
from tunesmith.config.methods import DEFAULT_LR, FreezeMethod, FullMethod, LoraMethod
from tunesmith.config.schema import RecipeConfig
from tunesmith.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
MINIMAL = {
    "name": "t",
    "task": "classification",
    "model": {"name": "builtin:minilm"},
    "data": {"train": "builtin:rt-snippets"},
}


def _write(path: Path, data) -> Path:
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return path


def _error(*overrides: str, base: dict | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        validate_recipe(apply_overrides(base or MINIMAL, list(overrides)))
    return str(info.value)


# ----------------------------------------------------------------------------- loading


def test_minimal_recipe_loads_with_defaults(tmp_path):
    config = load_recipe(_write(tmp_path / "r.yaml", MINIMAL))
    assert config.name == "t" and config.task == "classification"
    assert config.model.name == "builtin:minilm"
    assert [s.path for s in config.data.train] == ["builtin:rt-snippets"]
    assert config.data.train[0].weight is None
    assert isinstance(config.method, LoraMethod) and config.method.r == 8
    assert config.train.batch_size == 16 and config.train.scheduler == "cosine"


def test_method_without_type_is_the_default_lora():
    config = validate_recipe(apply_overrides(MINIMAL, ["method.r=4"]))
    assert isinstance(config.method, LoraMethod) and config.method.r == 4


@pytest.mark.parametrize(
    ("override", "method_cls"),
    [("method.type=full", FullMethod), ("method.type=freeze", FreezeMethod), ("method.type=lora", LoraMethod)],
)
def test_method_type_selects_section(override, method_cls):
    assert type(validate_recipe(apply_overrides(MINIMAL, [override])).method) is method_cls


def test_missing_file_is_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_recipe(tmp_path / "nope.yaml")


def test_invalid_yaml_is_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_recipe(_write(tmp_path / "r.yaml", "name: [unclosed\ntask: x\n"))


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", ""])
def test_non_mapping_yaml_is_config_error(tmp_path, text):
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_recipe(_write(tmp_path / "r.yaml", text))


# ----------------------------------------------------------------------------- unknown keys


@pytest.mark.parametrize(
    ("overrides", "unknown", "suggestion"),
    [
        (["nmae=x"], "nmae", "name"),
        (["data.trian=x"], "data.trian", "data.train"),
        (["data.max_lenght=64"], "data.max_lenght", "data.max_length"),
        (["train.bach_size=8"], "train.bach_size", "train.batch_size"),
        (["method.rr=4"], "method.rr", "method.r"),
        (["method.type=lora", "method.alpah=4"], "method.alpah", "method.alpha"),
        (["method.type=freeze", "method.train_last_n=1"], "method.train_last_n", "method.train_last_n_layers"),
        (["eval.probs=[a]"], "eval.probs", "eval.probes"),
    ],
)
def test_unknown_key_names_closest_valid_key(overrides, unknown, suggestion):
    message = _error(*overrides)
    assert f"unknown key {unknown!r}" in message
    assert f"Did you mean {suggestion!r}?" in message


def test_unknown_key_in_a_source_entry_is_suggested():
    message = _error("data.train=[{path: a.jsonl, wieght: 2}]")
    assert "Did you mean 'data.train.0.weight'?" in message


def test_unknown_key_without_close_match_has_no_suggestion():
    message = _error("train.zzzzzz=1")
    assert "unknown key 'train.zzzzzz'" in message and "Did you mean" not in message


def test_key_of_another_method_is_unknown():
    assert "unknown key 'method.r'" in _error("method.type=full", "method.r=4")


def test_all_errors_are_reported_together():
    message = _error("train.bach_size=8", "method.rr=4")
    assert "train.batch_size" in message and "method.r'" in message


# ----------------------------------------------------------------------------- values and required keys


@pytest.mark.parametrize(
    ("override", "where"),
    [
        ("train.batch_size=abc", "train.batch_size"),
        ("train.batch_size=0", "train.batch_size"),
        ("train.lr=-1", "train.lr"),
        ("train.scheduler=exponential", "train.scheduler"),
        ("task=translation", "task"),
        ("method.dropout=1.5", "method.dropout"),
        ("method.r=0", "method.r"),
        ("data.max_length=4", "data.max_length"),
        ("model.dtype=float16", "model.dtype"),
    ],
)
def test_bad_value_names_the_key(override, where):
    message = _error(override)
    assert f"  - {where}: " in message
    assert "(got " in message  # the offending value is echoed back


@pytest.mark.parametrize("key", ["name", "task", "model", "data"])
def test_missing_required_key(key):
    base = {k: v for k, v in MINIMAL.items() if k != key}
    assert f"{key}: required key is missing" in _error(base=base)


def test_missing_required_nested_key():
    assert "data.train: required key is missing" in _error(base={**MINIMAL, "data": {"eval_size": 10}})


def test_unknown_method_type():
    assert "unknown method type; choose one of full, freeze, lora, qlora, adalora, prefix, prompt, ptuning, ia3, adapter, bitfit" in _error("method.type=adaptor")


# ----------------------------------------------------------------------------- cross-field rules


def test_weights_need_mix_total():
    message = _error("data.train=[{path: a.jsonl, weight: 1}, {path: b.jsonl, weight: 5}]")
    assert "mix_total is not set" in message
    weighted = "data.train=[{path: a.jsonl, weight: 1}, {path: b.jsonl, weight: 5}]"
    ok = validate_recipe(apply_overrides(MINIMAL, [weighted, "data.mix_total=600"]))
    assert [s.weight for s in ok.data.train] == [1, 5] and ok.data.mix_total == 600


def test_weights_all_or_none():
    message = _error("data.train=[{path: a.jsonl, weight: 1}, b.jsonl]", "data.mix_total=10")
    assert "either every data.train source has a weight or none does" in message


def test_labels_only_for_classification():
    assert "data.labels only applies to task: classification" in _error("task=causal_lm", "data.labels=[neg, pos]")
    assert validate_recipe(apply_overrides(MINIMAL, ["data.labels=[neg, pos]"])).data.labels == ["neg", "pos"]


def test_duplicate_labels():
    assert "data.labels has duplicates" in _error("data.labels=[a, b, a]")


def test_system_prompt_only_for_causal_lm():
    assert "data.system_prompt and data.chat_template only apply to task: causal_lm or reward" in _error(
        "data.system_prompt=Be brief.")
    config = validate_recipe(apply_overrides(MINIMAL, ["task=causal_lm", "data.system_prompt=Be brief."]))
    assert config.data.system_prompt == "Be brief."


def test_eval_every_larger_than_max_steps_is_accepted():
    # a quick try of a recipe (--set train.max_steps=5) must not fail over its eval interval;
    # the run warns and evaluates at the end (tests/integration/test_train_cli.py)
    config = validate_recipe(apply_overrides(MINIMAL, ["train.eval_every=10", "train.max_steps=5"]))
    assert (config.train.eval_every, config.train.max_steps) == (10, 5)


# ----------------------------------------------------------------------------- overrides


def test_overrides_parse_yaml_values_and_leave_input_untouched():
    raw = {"name": "t", "train": {"batch_size": 4}}
    out = apply_overrides(
        raw,
        ["train.lr=1e-4", "train.max_steps=1e3", "model.trust_remote_code=true", "eval.probes=[a, b c]", "name=x=y"],
    )
    assert out["train"] == {"batch_size": 4, "lr": 1e-4, "max_steps": 1000.0}
    assert isinstance(out["train"]["lr"], float)
    assert out["model"] == {"trust_remote_code": True}  # section created
    assert out["eval"]["probes"] == ["a", "b c"]
    assert out["name"] == "x=y"  # only the first '=' separates key and value
    assert raw == {"name": "t", "train": {"batch_size": 4}}


def test_override_creates_nested_sections_and_replaces_scalars():
    assert apply_overrides({"a": 1}, ["a.b.c=2"]) == {"a": {"b": {"c": 2}}}


def test_empty_override_value_is_null():
    config = validate_recipe(apply_overrides({**MINIMAL, "train": {"max_grad_norm": 2.0}}, ["train.max_grad_norm="]))
    assert config.train.max_grad_norm is None


@pytest.mark.parametrize("bad", ["foo", "=3", " =3"])
def test_malformed_override(bad):
    with pytest.raises(ConfigError, match="not of the form key.sub=value"):
        apply_overrides(MINIMAL, [bad])


def test_override_with_invalid_yaml_value_is_config_error():
    with pytest.raises(ConfigError, match="not valid YAML"):
        apply_overrides(MINIMAL, ["eval.probes=[a"])


def test_load_recipe_applies_overrides_after_reading(tmp_path):
    path = _write(tmp_path / "r.yaml", {**MINIMAL, "train": {"lr": 0.1, "batch_size": 2}})
    config = load_recipe(path, ["train.lr=1e-4", "method.type=full"])
    assert config.train.lr == pytest.approx(1e-4) and config.train.batch_size == 2
    assert isinstance(config.method, FullMethod)


def test_scientific_notation_in_recipe_file_is_a_float(tmp_path):
    path = _write(tmp_path / "r.yaml", yaml.safe_dump(MINIMAL) + "train:\n  lr: 2e-4\n")
    assert load_recipe(path).train.lr == pytest.approx(2e-4)


# ----------------------------------------------------------------------------- paths and round trip


def test_relative_data_paths_are_anchored_at_the_recipe(tmp_path, monkeypatch):
    folder = tmp_path / "recipes"
    folder.mkdir()
    raw = {
        **MINIMAL,
        "data": {
            "train": ["data/a.jsonl", "builtin:rt-snippets", str(tmp_path / "abs.jsonl")],
            "eval": "../held/out.jsonl",
        },
    }
    monkeypatch.chdir(tmp_path)  # anchoring must not depend on the working directory
    config = load_recipe(_write(folder / "r.yaml", raw))
    assert [s.path for s in config.data.train] == [
        str(folder.resolve() / "data/a.jsonl"),
        "builtin:rt-snippets",
        str(tmp_path / "abs.jsonl"),
    ]
    assert [s.path for s in config.data.eval] == [str(folder.resolve() / "../held/out.jsonl")]


def test_anchor_data_paths_leaves_home_paths_alone(tmp_path):
    config = validate_recipe(apply_overrides(MINIMAL, ["data.train=[~/x.jsonl, y.jsonl]"]))
    _anchor_data_paths(config, tmp_path)
    assert [s.path for s in config.data.train] == ["~/x.jsonl", str(tmp_path / "y.jsonl")]


def test_dump_then_load_round_trips(tmp_path):
    (tmp_path / "a").mkdir()
    raw = {
        **MINIMAL,
        "task": "causal_lm",
        "data": {
            "train": [{"path": "d.jsonl", "weight": 1}, {"path": "builtin:identity", "weight": 5}],
            "mix_total": 600,
            "system_prompt": "Be brief.",
        },
        "method": {"type": "freeze", "train_last_n_layers": 2},
        "train": {"lr": 1e-4, "max_steps": 30, "eval_every": 10, "max_grad_norm": None},
        "eval": {"probes": ["Hi", "Who are you?"]},
    }
    first = load_recipe(_write(tmp_path / "a" / "r.yaml", raw))
    dumped = tmp_path / "b" / "config.yaml"
    dumped.parent.mkdir()
    dump_recipe(first, dumped)
    second = load_recipe(dumped)  # from another folder: paths must already be absolute
    assert second == first
    assert second.data.train[0].path == str((tmp_path / "a").resolve() / "d.jsonl")


def test_learning_rate_uses_method_default_when_absent():
    for method in ("full", "freeze", "lora"):
        config = validate_recipe(apply_overrides(MINIMAL, [f"method.type={method}"]))
        assert config.train.lr is None
        assert config.learning_rate == DEFAULT_LR[method]
    assert DEFAULT_LR["full"] < DEFAULT_LR["lora"]  # adapters need larger steps than full weights
    config = validate_recipe(apply_overrides(MINIMAL, ["train.lr=0.01"]))
    assert config.learning_rate == 0.01


def test_assignment_is_validated():
    config = validate_recipe(MINIMAL)
    with pytest.raises(ValueError):
        config.train.batch_size = 0


# ----------------------------------------------------------------------------- shipped recipes


CONFIGS = REPO / "configs"
PACKAGED = REPO / "src/tunesmith/recipes"  # what `tunesmith demo` and an installed package read


def _shipped() -> list[Path]:
    """Each shipped recipe once: configs/ is a symlink to the packaged folder, so globbing
    both would validate every recipe twice; a packaged file that is not the same file as
    one in configs/ is still validated (and fails the next test)."""
    seen: dict[Path, Path] = {}
    for path in sorted(CONFIGS.glob("*.yaml")) + sorted(PACKAGED.glob("*.yaml")):
        seen.setdefault(path.resolve(), path)
    return list(seen.values())


SHIPPED = _shipped()


def test_there_are_shipped_recipes():
    assert any(p.parent.name == "configs" for p in SHIPPED)


def test_the_packaged_recipes_are_the_ones_in_configs():
    configs = {p.name: p.read_bytes() for p in CONFIGS.glob("*.yaml")}
    packaged = {p.name: p.read_bytes() for p in PACKAGED.glob("*.yaml")}
    assert packaged == configs


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_recipe_validates(path):
    config = load_recipe(path)
    assert isinstance(config, RecipeConfig)
    # a shipped recipe must not point at files that do not exist
    for source in config.data.train + (config.data.eval or []):
        assert source.path.startswith("builtin:") or Path(source.path).is_file(), source.path


def test_prefix_with_its_mlp_gets_a_smaller_default_lr():
    from tunesmith.config.methods import default_lr

    config = RecipeConfig.model_validate({"name": "x", "task": "classification", "model": {"name": "m"},
                                          "data": {"train": "t.jsonl"}, "method": {"type": "prefix", "projection": True}})
    assert config.learning_rate == default_lr(config.method) == DEFAULT_LR["prefix"] / 10
    config.method.projection = False
    assert config.learning_rate == DEFAULT_LR["prefix"]
