"""The search space of `tunesmith tune`: every mistake named by its key before a trial runs."""

from __future__ import annotations

import pytest
import yaml

from tunesmith.config.load import validate_recipe
from tunesmith.errors import ConfigError
from tunesmith.tune.space import apply_params, load_space

BASE = validate_recipe({"name": "t", "task": "classification", "model": {"name": "m"},
                        "data": {"train": "a.jsonl"}, "method": {"type": "lora", "r": 8}}).model_dump(mode="json")


def space(tmp_path, body: dict):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(body))
    return load_space(path, BASE)


@pytest.mark.parametrize("body, message", [
    ({"train.lrr": {"log_uniform": [1e-5, 1e-2]}}, "unknown recipe key 'train.lrr'.*Did you mean 'train.lr'"),
    ({"train.lr": {"log_uniform": [1e-2, 1e-5]}}, "'train.lr' log_uniform range .* is empty"),
    ({"train.lr": {"log_uniform": [0, 1e-2]}}, "'train.lr' log_uniform needs a positive low bound"),
    ({"train.batch_size": {"int": [8.5, 32]}}, "'train.batch_size' int needs whole numbers"),
    ({"train.lr": {"choice": []}}, "'train.lr' choice needs a non-empty list"),
    ({"train.lr": 1e-3}, "'train.lr' needs a range"),
    ({"train.lr": {"uniform": [0.1, 0.2], "normal": [0, 1]}}, "'train.lr' must have exactly one of"),
    ({"train.scheduler": {"choice": ["cosine", "sawtooth"]}}, "'train.scheduler' value 'sawtooth' is not valid"),
    ({"method.r": {"choice": [8, 0]}}, "'method.r' value 0 is not valid"),
])
def test_a_bad_space_names_the_key(tmp_path, body, message):
    with pytest.raises(ConfigError, match=message):
        space(tmp_path, body)


def test_method_fields_are_sampled_only_for_methods_that_have_them(tmp_path):
    params = {p.key: p for p in space(tmp_path, {
        "method.type": {"choice": ["lora", "ia3"]}, "method.r": {"choice": [4, 16]},
        "train.lr": {"log_uniform": [1e-4, 1e-2]}, "method.dropout": {"uniform": [0.0, 0.2],
                                                                      "when": {"method.type": ["lora"]}}})}
    assert params["method.r"].applies({"method.type": "lora"})
    assert not params["method.r"].applies({"method.type": "ia3"})
    assert not params["method.dropout"].applies({"method.type": "ia3"})
    assert params["train.lr"].applies({"method.type": "ia3"})


def test_a_new_method_type_starts_its_section_afresh():
    recipe = apply_params(BASE, {"method.type": "ia3", "train.lr": 0.01})
    assert recipe["method"] == {"type": "ia3"} and recipe["train"]["lr"] == 0.01
    validate_recipe(recipe)  # no lora field left behind
    same = apply_params(BASE, {"method.type": "lora", "method.r": 16})
    assert same["method"]["r"] == 16 and same["method"]["alpha"] == BASE["method"]["alpha"]


def test_suggestions_follow_the_conditions():
    import optuna

    from tunesmith.tune.space import Param
    from tunesmith.tune.study import suggest

    params = [Param("method.r", "choice", [4, 16]), Param("method.type", "choice", ["ia3", "lora"]),
              Param("train.lr", "log_uniform", [1e-4, 1e-2])]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(12):
        chosen = suggest(study.ask(), params)
        assert ("method.r" in chosen) == (chosen["method.type"] == "lora")
        assert 1e-4 <= chosen["train.lr"] <= 1e-2
        seen.add(chosen["method.type"])
    assert seen == {"ia3", "lora"}
