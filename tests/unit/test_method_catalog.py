"""The method catalog is the one table of method facts, and every consumer reads it."""

from __future__ import annotations

import pytest

from tunesmith.config.load import validate_recipe
from tunesmith.config.methods import DEFAULT_LR, METHOD_TYPES, METHODS, PRESETS, default_lr, method_info
from tunesmith.config.schema import RecipeConfig
from tunesmith.errors import ConfigError

RECIPE = {"name": "x", "task": "classification", "model": {"name": "builtin:minilm"}, "data": {"train": "a.jsonl"}}


def test_every_method_has_a_builder_and_a_preset():
    from tunesmith.methods import BUILDERS

    assert set(BUILDERS) == set(METHODS) == set(METHOD_TYPES)
    assert {body["type"] for body in PRESETS.values()} == set(METHODS)


def test_the_schema_accepts_exactly_the_catalog_methods():
    for name, info in METHODS.items():
        config = validate_recipe(dict(RECIPE, method={"type": name}))
        assert type(config.method) is info.config
    with pytest.raises(ConfigError, match="unknown method type; choose one of full, freeze, lora"):
        validate_recipe(dict(RECIPE, method={"type": "lorax"}))


def test_every_preset_is_a_valid_method_section():
    for label, body in PRESETS.items():
        assert RecipeConfig.model_validate(dict(RECIPE, method=body)).method.type == body["type"], label


def test_catalog_facts_that_consumers_rely_on():
    # checkpoints: adapters are small; the old table knew only lora/freeze/full, so qlora and
    # ia3 got full fine-tuning's 3x estimate.
    assert method_info("qlora").checkpoint_share == method_info("lora").checkpoint_share < 1
    assert method_info("ia3").checkpoint_share < 1
    assert method_info("full").checkpoint_share == 3.0
    assert {n for n, m in METHODS.items() if m.prompt_based} == {"prefix", "prompt", "ptuning"}
    assert {n for n, m in METHODS.items() if m.shareable} == {"lora", "qlora", "adalora", "ia3"}
    assert {n for n, m in METHODS.items() if not m.mergeable} == {"prefix", "prompt", "ptuning", "adapter"}
    assert {n for n, m in METHODS.items() if m.family == "peft"} == {
        "lora", "qlora", "adalora", "prefix", "prompt", "ptuning", "ia3"}
    assert DEFAULT_LR == {n: m.default_lr for n, m in METHODS.items()}


def test_prefix_with_projection_gets_a_smaller_default_lr():
    config = validate_recipe(dict(RECIPE, method={"type": "prefix", "projection": True}))
    assert default_lr(config.method) == 5e-4 < DEFAULT_LR["prefix"]


def test_disk_check_reads_the_catalog(tmp_path, monkeypatch):
    """qlora's checkpoints are adapter-sized: a disk that fits them must not be refused."""
    import shutil
    from types import SimpleNamespace

    from tunesmith.train.preflight import check_disk_space

    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"0" * 1000)
    train = SimpleNamespace(keep_last_n=3, keep_best=False, save_every=10, save_every_epoch=False)
    free = 1000 * 0.1 * 5  # room for 4 adapter checkpoints + final, far from full fine-tuning's 3x
    monkeypatch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(free=free))
    check_disk_space(tmp_path, str(model), "qlora", train)
    with pytest.raises(ConfigError, match="Not enough disk space"):
        check_disk_space(tmp_path, str(model), "full", train)


@pytest.mark.parametrize(("method", "typo", "suggestion"), [
    ("adalora", "init_rr", "method.init_r"), ("prefix", "num_virtual_token", "method.num_virtual_tokens"),
    ("ia3", "feedforward_module", "method.feedforward_modules"), ("adapter", "reduction", "method.reduction_factor"),
    ("bitfit", "train_heads", "method.train_head"), ("ptuning", "encoder_hidden", "method.encoder_hidden_size"),
])
def test_did_you_mean_reaches_every_method(method, typo, suggestion):
    with pytest.raises(ConfigError) as err:
        validate_recipe(dict(RECIPE, method={"type": method, typo: 1}))
    message = str(err.value)
    assert f"unknown key 'method.{typo}'. Did you mean '{suggestion}'?" in message
    assert f"method.{method}." not in message  # pydantic's union tag is not shown


def test_loftq_is_refused_with_the_reason():
    with pytest.raises(ConfigError, match="LoftQ changes the base weights"):
        validate_recipe(dict(RECIPE, method={"type": "lora", "init": "loftq"}))
    with pytest.raises(ConfigError, match="LoftQ changes the base weights"):
        validate_recipe(dict(RECIPE, method={"type": "qlora", "init": "loftq"}))


@pytest.mark.parametrize(("section", "key", "suggestion"), [
    ({"method": {"type": "lora", "rank": 4}}, "method.rank", "method.r"),
    ({"method": {"type": "qlora", "lora_alpha": 8}}, "method.lora_alpha", "method.alpha"),
    ({"train": {"learning_rate": 1e-3}}, "train.learning_rate", "train.lr"),
    ({"train": {"gradient_accumulation_steps": 4}}, "train.gradient_accumulation_steps", "train.grad_accum"),
])
def test_other_tools_names_suggest_ours(section, key, suggestion):
    with pytest.raises(ConfigError, match=f"unknown key '{key}'. Did you mean '{suggestion}'"):
        validate_recipe(dict(RECIPE, **section))
