"""The recipe reference comes from the schema, and starter recipes run as written."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunesmith.cli import main
from tunesmith.config.load import load_recipe
from tunesmith.config.methods import METHODS
from tunesmith.config.reference import fields, reference_markdown, starter_recipe
from tunesmith.config.schema import RecipeConfig, TrainConfig
from tunesmith.objectives.tasks import TASKS

DOC = Path(__file__).resolve().parents[2] / "docs" / "recipe-reference.md"


def test_the_reference_doc_is_current():
    assert DOC.read_text(encoding="utf-8") == reference_markdown(), (
        "docs/recipe-reference.md is stale: regenerate it with "
        "python -c 'from tunesmith.config.reference import reference_markdown; "
        "open(\"docs/recipe-reference.md\", \"w\").write(reference_markdown())'")


def test_every_field_is_listed_with_its_default_and_description():
    rows = {r["key"]: r for r in fields()}
    for name, field in TrainConfig.model_fields.items():
        assert f"train.{name}" in rows
    assert rows["train.guard.spike_std"]["default"] == "6.0" and "standard deviations" in \
        rows["train.guard.spike_std"]["description"]
    assert rows["model.name"]["default"] == "required"
    for method, info in METHODS.items():
        for name in info.config.model_fields:
            assert f"method[{method}].{name}" in rows
    assert all(r["description"] for r in rows.values())
    assert {k.split(".")[0] for k in rows if "[" not in k} >= set(RecipeConfig.model_fields) - {"method"}


@pytest.mark.parametrize("task", [t for t in TASKS if t != "distill"])  # distill: needs its teacher, see test_distill
@pytest.mark.parametrize("method", list(METHODS))
def test_starter_recipes_validate_as_written(task, method, tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(starter_recipe(task, method), encoding="utf-8")
    config = load_recipe(path)
    assert (config.task, config.method.type) == (task, method)
    assert config.learning_rate == METHODS[method].default_lr or method == "prefix"


def test_recipe_cli(tmp_path, capsys):
    assert main(["recipe", "fields", "train.guard"]) == 0
    out = capsys.readouterr().out
    assert "train.guard.max_rollbacks  (int, default 3)" in out and "train.lr" not in out
    assert main(["recipe", "fields", "nothing.here"]) == 2
    out_file = tmp_path / "sft.yaml"
    assert main(["recipe", "new", "--task", "causal_lm", "--method", "qlora", "--out", str(out_file)]) == 0
    assert load_recipe(out_file).method.type == "qlora"
    assert main(["recipe", "new", "--task", "causal_lm", "--method", "qlora", "--out", str(out_file)]) == 2
    assert main(["recipe", "new", "--task", "translation"]) == 2
