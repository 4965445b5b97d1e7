"""The reward objective: Bradley-Terry loss by hand, rendering that keeps the answer, pair metrics."""

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from tunesmith.eval.metrics import METRICS
from tunesmith.objectives.reward import RewardObjective

PAIRS = [
    {"prompt": "write a review.", "chosen": "a wonderful film", "rejected": "an awful film with a dull plot"},
    {"prompt": [{"role": "user", "content": "rate it"}], "chosen": [{"role": "assistant", "content": "great"}],
     "rejected": [{"role": "assistant", "content": "bad"}]},
    {"prompt": "one more, please, a long one this time", "chosen": "lovely", "rejected": "poor"},
]


@pytest.fixture(scope="module")
def reward_model(tiny_llama_dir):
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_llama_dir, num_labels=1).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def _one_reward(model, tokenizer, prompt, answer, system=None) -> float:
    """The reward of one conversation, rendered by hand and scored alone (no padding)."""
    messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
    messages = ([{"role": "system", "content": system}] if system else []) + messages
    messages = messages + (answer if isinstance(answer, list) else [{"role": "assistant", "content": answer}])
    ids = tokenizer(tokenizer.apply_chat_template(messages, tokenize=False), add_special_tokens=False,
                    return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return float(model(input_ids=ids).logits[0, 0])


def test_bradley_terry_loss_equals_a_hand_computation(reward_model):
    model, tokenizer = reward_model
    objective = RewardObjective(tokenizer, 128, system_prompt="be fair.", margin=0.5)
    batch = objective.collate(objective.encode(PAIRS))
    with torch.no_grad():
        got = objective.loss_sum(model, batch)
        expected = sum(
            -F.logsigmoid(torch.tensor(_one_reward(model, tokenizer, p["prompt"], p["chosen"], "be fair.")
                                       - _one_reward(model, tokenizer, p["prompt"], p["rejected"], "be fair.") - 0.5))
            for p in PAIRS)
    assert float(got) == pytest.approx(float(expected), abs=1e-5)
    assert objective.count_targets(batch) == 3


def test_a_long_prompt_is_cut_from_its_start_and_the_answer_is_kept(reward_model):
    _, tokenizer = reward_model
    long = {"prompt": "word " * 80 + "the end of the question", "chosen": "a wonderful film", "rejected": "bad"}
    objective = RewardObjective(tokenizer, 24)
    (feature,) = objective.encode([long])
    prompt_ids, answer_ids = objective.render(long["prompt"], long["chosen"])
    assert len(feature["chosen_ids"]) == 24
    assert feature["chosen_ids"][-len(answer_ids):] == answer_ids  # the answer whole, at the end
    assert feature["chosen_ids"][: 24 - len(answer_ids)] == prompt_ids[-(24 - len(answer_ids)):]  # the prompt's end
    assert objective.overlength_report["rows"] == 0


def test_an_answer_longer_than_max_length_follows_the_overlength_policy(reward_model):
    from tunesmith.errors import DataError

    _, tokenizer = reward_model
    pair = dict(PAIRS[0], _where="pairs.jsonl line 7", rejected="dull " * 40)
    assert len(RewardObjective(tokenizer, 16, overlength="drop").encode([pair, PAIRS[1]])) == 1
    with pytest.raises(DataError, match="pairs.jsonl line 7"):
        RewardObjective(tokenizer, 16, overlength="raise").encode([pair])


def test_encoder_models_see_the_prompt_and_the_answer_as_a_sentence_pair(tiny_bert_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    prompt_ids, answer_ids = RewardObjective(tokenizer, 64).render("write a review.", "a wonderful film")
    assert prompt_ids + answer_ids == tokenizer("write a review.", "a wonderful film")["input_ids"]
    assert tokenizer.decode(answer_ids, skip_special_tokens=True) == "a wonderful film"


def test_scores_are_the_same_alone_and_in_a_padded_batch(reward_model):
    model, tokenizer = reward_model
    objective = RewardObjective(tokenizer, 128)
    answers = ["a wonderful film", "an awful film with a dull plot that never ends"]
    together = objective.score(model, "write a review.", answers)
    alone = [_one_reward(model, tokenizer, "write a review.", a) for a in answers]
    assert together == pytest.approx(alone, abs=1e-5)


def test_pair_metrics_by_hand():
    outputs = {"chosen": [2.0, 0.5, 1.0, 3.0], "rejected": [1.0, 1.5, 1.0, -1.0]}
    assert METRICS["pairwise_accuracy"].fn(outputs) == 0.5  # a tie counts as wrong
    assert METRICS["mean_margin"].fn(outputs) == pytest.approx((1.0 - 1.0 + 0.0 + 4.0) / 4)
    assert METRICS["pairwise_accuracy"].higher_is_better and METRICS["mean_margin"].higher_is_better
