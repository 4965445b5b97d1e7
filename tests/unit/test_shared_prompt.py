"""Answers packed behind one shared prompt score exactly as separate prompt + answer rows."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from tunesmith.config.schema import GrpoConfig
from tunesmith.objectives.grpo import GrpoObjective
from tunesmith.objectives.shared_prompt import (
    pack_shared_prompts, per_answer_sums, shared_prompt_logps, supports_shared_prompts)

PROMPTS = [{"messages": [{"role": "user", "content": "how was the film?"}]},
           {"messages": [{"role": "user", "content": "tell me what two plus two is, please"}]}]


def _model(path, attention: str):
    return AutoModelForCausalLM.from_pretrained(path, attn_implementation=attention).eval()


def _alone(model, prompt: list[int], answer: list[int]) -> float:
    """The answer's summed log-probability as its own unpadded row."""
    ids = torch.tensor([prompt + answer])
    with torch.no_grad():
        logps = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
    return sum(float(logps[len(prompt) + k - 1, token]) for k, token in enumerate(answer))


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_each_answer_scores_as_its_own_row_whatever_shares_its_row(tiny_llama_dir, attention):
    model = _model(tiny_llama_dir, attention)
    assert supports_shared_prompts(model)
    groups = [[([5, 9, 14, 3], [[7, 8, 9], [11], []]), ([20, 21], [[22, 23, 24, 25]])],  # two groups in one row
              [([30, 31, 32, 33, 34, 35, 36], [[40, 41], [40, 42, 43]])]]  # a narrower row, padded
    batch = pack_shared_prompts(groups, pad=0)
    assert batch["input_ids"].shape == (2, 4 + 3 + 1 + 2 + 4)
    assert int(batch["num_tokens"]) == 14 + 7 + 5
    with torch.no_grad():
        sums, counts = per_answer_sums(shared_prompt_logps(model, batch), batch, 6)
    flat = [(prompt, answer) for row in groups for prompt, answers in row for answer in answers]
    assert counts.tolist() == [len(answer) for _, answer in flat]
    for i, (prompt, answer) in enumerate(flat):
        assert float(sums[i]) == pytest.approx(_alone(model, prompt, answer), abs=1e-4)
    assert batch["answer_ends"].tolist() == [[0, 6], [0, 7], [0, 3], [0, 13], [1, 8], [1, 11]]


def test_a_group_without_a_prompt_is_refused_naming_its_row():
    with pytest.raises(ValueError, match="row 1: a group with an empty prompt"):
        pack_shared_prompts([[([1], [[2]])], [([], [[3]])]], pad=0)


def test_grpo_on_shared_prompt_rows_has_the_padded_rows_loss_and_gradients(tiny_llama_dir):
    base = _model(tiny_llama_dir, "sdpa")
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    settings = GrpoConfig(rewards=[{"type": "regex", "pattern": "a"}], num_generations=4, max_new_tokens=6,
                          kl_beta=0.3, temperature=1.5)
    padded = GrpoObjective(tokenizer, 32, settings)
    batch = padded.collate(padded.encode(PROMPTS))
    torch.manual_seed(3)
    rolled = padded.rollout(model, batch)
    shared = {**GrpoObjective(tokenizer, 32, settings).shared_prompt_rows(batch, rolled, 4),
              "advantages": rolled["advantages"], "num_examples": rolled["num_examples"]}
    assert padded.count_targets(shared) == padded.count_targets(rolled)
    assert int(shared["num_tokens"]) < int(rolled["attention_mask"].sum())  # the prompts once, not 4 times

    def loss_and_grads(batch):
        model.zero_grad()
        loss = padded.loss_sum(model, batch)
        loss.backward()
        return float(loss.detach()), [p.grad.clone() for p in model.parameters() if p.requires_grad]

    loss_padded, grads_padded = loss_and_grads(rolled)
    loss_shared, grads_shared = loss_and_grads(shared)
    assert loss_shared == pytest.approx(loss_padded, abs=1e-5)
    # Float rounding only: each gradient agrees to a millionth of its size.
    assert all(float((a - b).norm()) <= 1e-5 * float(b.norm()) for a, b in zip(grads_shared, grads_padded))
    assert any(g.abs().sum() > 0 for g in grads_shared)


def test_grpo_rollout_packs_shared_prompts_only_when_asked(tiny_llama_dir):
    model = _model(tiny_llama_dir, "sdpa")
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    settings = GrpoConfig(rewards=[{"type": "regex", "pattern": "a"}], num_generations=3, max_new_tokens=4)
    for padding_free, packed in ((True, True), (False, False)):
        objective = GrpoObjective(tokenizer, 32, settings, padding_free=padding_free)
        rolled = objective.rollout(model, objective.collate(objective.encode(PROMPTS)))
        assert ("target_ids" in rolled) is packed
        assert rolled["input_ids"].shape[0] == (2 if packed else 6)


PAIRS = [
    {"prompt": "write a review.", "chosen": "a wonderful film", "rejected": "an awful film with a dull plot"},
    {"prompt": [{"role": "user", "content": "rate it"}], "chosen": [{"role": "assistant", "content": "great"}],
     "rejected": [{"role": "assistant", "content": "bad"}]},
    {"prompt": "one more, please, a long one this time", "chosen": "lovely", "rejected": "lovely, if slow"},
]


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_a_reward_model_scores_shared_prompt_rows_as_separate_rows_with_the_same_gradients(tiny_llama_dir,
                                                                                           attention):
    from transformers import AutoModelForSequenceClassification

    from tunesmith.objectives.reward import RewardObjective, shared_score_head

    torch.manual_seed(0)
    base = AutoModelForSequenceClassification.from_pretrained(tiny_llama_dir, num_labels=1,
                                                              attn_implementation=attention)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    base.config.pad_token_id = tokenizer.pad_token_id
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="SEQ_CLS",
                                            init_lora_weights=False))
    assert shared_score_head(model) is not None
    separate, shared = RewardObjective(tokenizer, 128), RewardObjective(tokenizer, 128, padding_free=True)
    features = separate.encode(PAIRS)
    batches = separate.collate(features), shared.collate(features)
    assert "shared_input_ids" in batches[1] and batches[1]["shared_input_ids"].shape[0] == 3  # a row per pair
    # The third pair shares "lovely" too: its chosen answer is read where the shared part ends.
    assert int(batches[1]["shared_num_tokens"]) < int(batches[0]["attention_mask"].sum())

    def rewards_and_grads(objective, batch):
        model.zero_grad()
        chosen, rejected = objective.rewards(model, batch)
        objective.loss_sum(model, batch).backward()
        return torch.cat([chosen, rejected]).detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad]

    (expected, grads), (got, grads_shared) = (rewards_and_grads(separate, batches[0]),
                                              rewards_and_grads(shared, batches[1]))
    assert torch.allclose(got, expected, atol=1e-5)
    assert float(expected.std()) > 1e-3  # the rewards differ: the comparison can fail
    assert all(float((a - b).norm()) <= 1e-5 * float(b.norm()) for a, b in zip(grads_shared, grads))


def test_an_encoder_reward_model_keeps_separate_rows(tiny_bert_dir):
    from transformers import AutoModelForSequenceClassification

    from tunesmith.objectives.reward import RewardObjective, shared_score_head

    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=1).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    assert shared_score_head(model) is None  # bidirectional: an answer would change how the prompt reads
    shared = RewardObjective(tokenizer, 64, padding_free=True)
    features = shared.encode(PAIRS)
    with torch.no_grad():
        got = torch.cat(shared.rewards(model, shared.collate(features)))
        expected = torch.cat(RewardObjective(tokenizer, 64).rewards(model, RewardObjective(tokenizer, 64).collate(features)))
    assert torch.equal(got, expected)
