"""The advisor returns the guides' answers: a table of scenarios on tiny models, budgets set
between the real plans of the methods."""

from __future__ import annotations

import pytest

from tunesmith.config.schema import RecipeConfig
from tunesmith.plan.advisor import HEADROOM, advise
from tunesmith.plan.planner import make_plan


def recipe(model_dir, task="classification", method=None, **train) -> RecipeConfig:
    return RecipeConfig.model_validate({
        "name": "a", "task": task, "model": {"name": str(model_dir)}, "data": {"train": "x.jsonl", "max_length": 64},
        "method": method or {"type": "lora"}, "train": {"batch_size": 16, "grad_accum": 2, **train}})


def needs(config, **method) -> int:
    """The budget at which ``method`` just fits with the advisor's headroom."""
    data = config.model_dump(mode="json")
    data["method"] = method
    return int(make_plan(RecipeConfig.model_validate(data), with_time=False).total_bytes / HEADROOM) + 1


def chosen(config, budget, examples=None):
    """The method the advisor recommends, read back from its --set changes."""
    import yaml

    from tunesmith.config.load import apply_overrides, validate_recipe

    plan = make_plan(config, with_time=False, budget_bytes=budget)
    advice = advise(config, plan, budget_bytes=budget, examples=examples)
    changed = validate_recipe(apply_overrides(config.model_dump(mode="json"), advice.overrides()))
    assert yaml.safe_dump(changed.model_dump(mode="json"))  # the changes make a valid recipe
    return changed.method.model_dump(mode="json"), advice


@pytest.fixture(scope="module")
def budgets(tiny_bert_dir):
    config = recipe(tiny_bert_dir)
    return {"full": needs(config, type="full"), "lora": needs(config, type="lora", r=8, alpha=16),
            "qlora": needs(config, type="qlora", r=8, alpha=16)}


def test_method_decision_tree(tiny_bert_dir, budgets):
    config = recipe(tiny_bert_dir)
    assert budgets["qlora"] < budgets["lora"] < budgets["full"]
    rows = [  # (budget, examples) -> the guides' method
        ((budgets["full"] * 4, 50_000), "full"),        # everything fits and there is much data
        ((budgets["full"] * 4, 800), "lora"),           # fits, but little data: adapters overfit less
        (((budgets["lora"] + budgets["full"]) // 2, 50_000), "lora"),
        (((budgets["qlora"] + budgets["lora"]) // 2, 50_000), "qlora"),
        ((budgets["qlora"] - (budgets["lora"] - budgets["qlora"]) // 2, 50_000), "bitfit"),  # a simple task, biases
    ]
    for (budget, examples), expected in rows:
        method, advice = chosen(config, budget, examples)
        assert method["type"] == expected, (budget, examples, advice.path)


def test_rank_follows_task_complexity(tiny_llama_dir):
    for task, rank in (("classification", 8), ("causal_lm", 16), ("pretrain", 32)):
        config = recipe(tiny_llama_dir, task=task)
        method, advice = chosen(config, 2**40, examples=500)
        assert (method["type"], method["r"], method["alpha"]) == ("lora", rank, 2 * rank), advice.path


def test_lightest_methods_when_nothing_else_fits(tiny_llama_dir):
    # A Llama has no bias terms: a simple task gets prompt tuning, a harder one bottleneck adapters.
    for task, expected in (("classification", "prompt"), ("causal_lm", "adapter")):
        config = recipe(tiny_llama_dir, task=task)
        method, advice = chosen(config, needs(config, type="qlora", r=8, alpha=16) // 2, examples=50_000)
        assert method["type"] == expected, advice.path


def test_batch_learning_rate_and_data_advice(tiny_llama_dir):
    config = recipe(tiny_llama_dir, task="causal_lm", batch_size=4, grad_accum=1, lr=0.5)
    _, advice = chosen(config, 2**40, examples=1_000)
    changes = {c.key: c for c in advice.changes}
    assert changes["train.grad_accum"].new == 8  # 4 x 8 = 32 examples per step
    assert changes["train.lr"].new == 1e-3 and "between 0.0001 and 0.001" in changes["train.lr"].why
    assert any("instruct/chat model" in n for n in advice.notes)  # a tiny-llama folder is no chat model by name


def test_memory_levers_when_the_chosen_method_is_tight(tiny_llama_dir):
    from tunesmith.plan.advisor import Advice, _memory_levers

    config = recipe(tiny_llama_dir, task="causal_lm", method={"type": "lora"})
    checkpointed = recipe(tiny_llama_dir, task="causal_lm", method={"type": "lora"}, gradient_checkpointing=True)
    budget = (needs(checkpointed, type="lora") + needs(config, type="lora")) // 2
    advice = Advice()
    _memory_levers(config, lambda method, base=config: make_plan(base, with_time=False), budget, advice)
    assert [c.key for c in advice.changes] == ["train.gradient_checkpointing"]
