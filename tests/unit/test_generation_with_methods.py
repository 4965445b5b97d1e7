"""Probe answers use the method: deep prompts (prefix tuning) must reach generation too."""

from __future__ import annotations

import torch

from tunesmith.config.methods import LoraMethod, PrefixMethod
from tunesmith.methods import apply_method
from tunesmith.models.load import load_model
from tunesmith.eval.generate import greedy_without_cache, uses_deep_prompts
from tunesmith.objectives.causal_lm import CausalLMObjective

CPU = torch.device("cpu")


def test_greedy_without_cache_matches_generate(tiny_llama_dir):
    model, tokenizer = load_model(str(tiny_llama_dir), "causal_lm")
    model = apply_method(model, LoraMethod(dropout=0.0), "causal_lm").eval()
    ids = tokenizer("who are you?", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        expected = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=6,
                                  do_sample=False, pad_token_id=tokenizer.pad_token_id)
        ours = greedy_without_cache(model, ids, 6, stop_ids=set())
    assert torch.equal(ours, expected)


def test_prefix_tuned_answers_differ_from_the_base_model(tiny_llama_dir):
    model, tokenizer = load_model(str(tiny_llama_dir), "causal_lm")
    objective = CausalLMObjective(tokenizer, 64)
    base = objective.answer(model, ["who are you?"], 6, CPU)
    torch.manual_seed(0)
    wrapped = apply_method(model, PrefixMethod(num_virtual_tokens=4), "causal_lm")
    assert uses_deep_prompts(wrapped)
    assert objective.answer(wrapped, ["who are you?"], 6, CPU) != base
