"""task: grpo through the CLI: a rule reward rises within a few dozen steps; exact resume."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import copy_as_crashed_after
from tunesmith.cli import main
from tunesmith.testing import GRPO_QUESTIONS, write_grpo_recipe


def favourite_word(model_dir) -> str:
    """The word the untrained tiny model says most often to the recipe's prompts (T=0.5): a
    single token, so "the answer contains it" is a reward the tiny model can learn (a set of
    random tokens shares no direction in its 32-wide space)."""
    from collections import Counter

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunesmith.config.schema import GrpoConfig
    from tunesmith.objectives.grpo import GrpoObjective

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    settings = GrpoConfig(rewards=[{"type": "regex", "pattern": "x"}], max_new_tokens=6, temperature=0.5)
    objective = GrpoObjective(AutoTokenizer.from_pretrained(model_dir), 32, settings)
    rows = [{"messages": [{"role": "user", "content": f"{q} ({i})"}]} for i, q in enumerate(GRPO_QUESTIONS)]
    torch.manual_seed(0)
    answers = objective.sample(model, objective.collate(objective.encode(rows)), 16)["answers"]
    counts = Counter(word for answer in answers for word in set(answer.split()) if word.isalpha())
    return counts.most_common(1)[0][0]


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_grpo_raises_a_rule_reward_within_a_few_dozen_steps(tmp_path, tiny_llama_dir):
    word = favourite_word(tiny_llama_dir)
    recipe = write_grpo_recipe(tmp_path, tiny_llama_dir, pattern=rf"\b{word}\b")
    assert main(["train", str(recipe)]) == 0
    run_dir = tmp_path / "runs" / "tiny-grpo"
    logged = _lines(run_dir / "metrics.jsonl")
    assert len(logged) * 2 <= 40  # a few dozen steps
    # The first two steps' answers rarely say it; the last steps' nearly always do.
    assert logged[0]["reward"] <= 0.2
    assert sum(r["reward"] for r in logged[-3:]) / 3 >= 0.9
    assert {"reward_std", "completion_length", "reward/0:regex"} <= set(logged[0])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["eval_after"]["mean_reward"] > summary["eval_before"]["mean_reward"]
    meta = json.loads((run_dir / "final" / "tunesmith.json").read_text())
    assert meta["stage"] == "grpo" and meta["task"] == "causal_lm"


def test_a_grpo_run_resumes_exactly(tmp_path, tiny_llama_dir):
    recipe = write_grpo_recipe(tmp_path, tiny_llama_dir)
    args = ["--set", "train.log_every=1", "--set", "train.save_every=1", "--set", "train.keep_last_n=100",
            "--set", "train.max_steps=6"]
    reference = tmp_path / "reference"
    assert main(["train", str(recipe), "--output-dir", str(reference), *args]) == 0
    run = copy_as_crashed_after(reference, tmp_path / "resumed", 3)
    assert main(["train", str(recipe), "--output-dir", str(run), "--resume", *args]) == 0
    # The same answers are sampled after the resume: the same rewards and losses, step for step.
    for key in ("loss", "reward"):
        assert [r[key] for r in _lines(run / "metrics.jsonl")] == pytest.approx(
            [r[key] for r in _lines(reference / "metrics.jsonl")], abs=1e-6)
    ref = load_file(reference / "final" / "adapter_model.safetensors")
    got = load_file(run / "final" / "adapter_model.safetensors")
    assert all(torch.equal(ref[k], got[k]) for k in ref)
