"""The shipped recipes validate, and the staged "positive reviews" demo fits together."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunesmith.config.load import load_recipe
from tunesmith.data.sources import load_records
from tunesmith.objectives.tasks import task_spec

RECIPES = Path(__file__).resolve().parents[2] / "src" / "tunesmith" / "recipes"


@pytest.mark.parametrize("path", sorted(RECIPES.rglob("*.yaml")), ids=lambda p: str(p.relative_to(RECIPES)))
def test_every_shipped_recipe_validates_and_its_data_exists(path):
    config = load_recipe(path)
    for source in config.data.train:
        if not source.path.startswith("builtin:"):
            rows = load_records(source.path, task_spec(config.task).shape, base_dir=path.parent)
            assert len(rows) >= 16


def test_the_positive_reviews_stages_share_their_pairs_and_reward_with_the_demo_classifier():
    folder = RECIPES / "positive-reviews"
    dpo, reward, grpo = (load_recipe(folder / f"{name}.yaml") for name in ("dpo", "reward", "grpo"))
    demo = load_recipe(RECIPES / "demo.yaml")
    # DPO and the reward model learn from the same rated pairs.
    assert dpo.data.train == reward.data.train and dpo.data.min_gap == reward.data.min_gap
    # GRPO is rewarded by the demo classifier's "positive" label (rt-snippets' labels).
    classifier = next(r for r in grpo.grpo.rewards if r.type == "classifier")
    assert classifier.run == f"runs/{demo.name}"
    assert classifier.label in {row["label"] for row in load_records(demo.data.train[0].path, "classification")}
