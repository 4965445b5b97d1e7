"""GRPO: sampling and its masks, the reward registry, group advantages, the loss by hand."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tunesmith.config.schema import GrpoConfig
from tunesmith.config.stages import RewardEntry
from tunesmith.objectives.grpo import GrpoObjective, until_stop
from tunesmith.objectives.preference import answer_token_logps
from tunesmith.objectives.rewards import build_rewards, total_rewards

PROMPTS = [{"messages": [{"role": "user", "content": "how was the film?"}]},
           {"messages": [{"role": "user", "content": "what is two plus two?"}, {"role": "assistant", "content": "4"}]}]


@pytest.fixture(scope="module")
def tiny(tiny_llama_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval(), AutoTokenizer.from_pretrained(tiny_llama_dir)


def _settings(**kw):
    return GrpoConfig(**{"rewards": [{"type": "regex", "pattern": r"\d"}], "num_generations": 4,
                         "max_new_tokens": 6, **kw})


def test_sampled_answers_stop_at_the_stop_token_and_their_log_probs_match_one_by_one(tiny):
    model, tokenizer = tiny
    objective = GrpoObjective(tokenizer, 32, _settings())
    batch = objective.collate(objective.encode(PROMPTS))
    torch.manual_seed(0)
    sampled = objective.sample(model, batch, 4)
    stop = tokenizer.eos_token_id
    assert sampled["input_ids"].shape[0] == 8
    width = batch["input_ids"].shape[1]
    for row, answer_mask in zip(sampled["input_ids"], sampled["answer_mask"]):
        answer = row[width:][answer_mask[width:].bool()].tolist()
        assert stop not in answer[:-1]  # the mask ends at the first stop token, which it keeps
    # Each answer's log-probability with left padding and position ids equals the unpadded one.
    logps, mask, _ = answer_token_logps(model, sampled)
    summed = (logps * mask).sum(1)
    for i in range(8):
        keep = sampled["attention_mask"][i].bool()
        ids = sampled["input_ids"][i][keep].unsqueeze(0)
        n_answer = int(sampled["answer_mask"][i].sum())
        with torch.no_grad():
            alone = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
        expected = sum(float(alone[p - 1, ids[0, p]]) for p in range(ids.shape[1] - n_answer, ids.shape[1]))
        assert float(summed[i].detach()) == pytest.approx(expected, abs=1e-4)


def test_an_answer_ends_at_its_first_stop_token_which_it_keeps():
    answers = torch.tensor([[5, 6, 2, 0, 0], [5, 9, 7, 8, 6], [2, 0, 0, 0, 0], [5, 3, 6, 2, 0]])
    assert until_stop(answers, [2, 3]).tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0],
                                                    [1, 1, 0, 0, 0]]


def test_the_reward_registry_scores_each_rule_and_sums_with_weights():
    rules = [RewardEntry(type="regex", pattern="good", weight=2.0), RewardEntry(type="format", pattern=r"\d+"),
             RewardEntry(type="exact"), RewardEntry(type="length", min_words=2, max_words=4, weight=0.5)]
    answers = ["a good film", "42", " The   Answer ", "good"]
    references = [None, "41", "the answer", None]
    total, means = total_rewards(build_rewards(rules), ["q"] * 4, answers, references)
    # regex x2 + format + exact + length x0.5 (1 word is below 2: 1 - 1/1 = 0)
    assert total.tolist() == pytest.approx([2 + 0 + 0 + 0.5, 0 + 1 + 0 + 0, 0 + 0 + 1 + 0.5, 2 + 0 + 0 + 0])
    assert means["reward/0:regex"] == 0.5 and means["reward/2:exact"] == 0.25


@pytest.mark.parametrize("bad, message", [
    ({"type": "regex"}, "a regex reward needs pattern"),
    ({"type": "format", "pattern": "(unclosed"}, "not a valid regular expression"),
    ({"type": "classifier", "run": "runs/x"}, "needs label"),
    ({"type": "length"}, "min_words or max_words"),
])
def test_a_reward_entry_missing_what_its_type_needs_is_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        RewardEntry(**bad)


def test_the_loss_is_the_advantage_weighted_log_prob_gradient_with_the_k3_kl(tiny):
    model, tokenizer = tiny
    objective = GrpoObjective(tokenizer, 32, _settings(kl_beta=0.5))
    batch = objective.collate(objective.encode(PROMPTS))
    torch.manual_seed(1)
    rolled = objective.rollout(model, batch)
    adv = rolled["advantages"].view(2, 4)
    assert torch.allclose(adv.mean(1), torch.zeros(2), atol=1e-5)
    reference = AutoModelForCausalLM.from_pretrained(model.name_or_path).eval()
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(0.01 * torch.randn_like(p))
    objective.reference_model = reference
    loss = objective.loss_sum(model, rolled)
    logps, mask, _ = answer_token_logps(model, rolled)
    with torch.no_grad():
        ref, _, _ = answer_token_logps(reference, rolled)
    kl = torch.exp(ref - logps) - (ref - logps) - 1
    expected = ((-rolled["advantages"].unsqueeze(1) + 0.5 * kl) * mask).sum()
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    assert objective.count_targets(rolled) == int(mask.sum())


def test_exact_rewards_read_the_rows_reference_answer(tiny):
    _, tokenizer = tiny
    objective = GrpoObjective(tokenizer, 32, _settings(rewards=[{"type": "exact"}]))
    batch = objective.collate(objective.encode(PROMPTS))
    rewards, _ = objective.score(batch, ["4", "4", "five", "4"], 2)
    assert rewards.tolist() == [0.0, 0.0, 0.0, 1.0]  # row 1 has no reference; row 2's is "4"
