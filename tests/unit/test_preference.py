"""The preference objective: every loss by hand on a tiny model, the references, the batches."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from tunesmith.config.schema import PreferenceConfig
from tunesmith.errors import DataError
from tunesmith.eval.metrics import METRICS
from tunesmith.objectives.preference import PreferenceObjective, adapters_disabled

PAIRS = [
    {"prompt": "write a review.", "chosen": "a wonderful film", "rejected": "an awful film with a dull plot"},
    {"prompt": [{"role": "user", "content": "rate it"}], "chosen": [{"role": "assistant", "content": "great"}],
     "rejected": [{"role": "assistant", "content": "bad, truly bad"}]},
    {"prompt": "one more, please, a longer one this time", "chosen": "lovely", "rejected": "poor"},
]


@pytest.fixture(scope="module")
def models(tiny_llama_dir):
    """(policy, base, tokenizer): a LoRA policy whose adapter is not zero, and an untouched base."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    policy = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama_dir),
                            LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(3)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    return policy.eval(), base, tokenizer


def _answer_logp(model, tokenizer, prompt, answer) -> tuple[float, int]:
    """log p(answer | prompt) summed over the answer's tokens, one conversation alone, no padding."""
    messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
    head = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    whole = tokenizer.apply_chat_template(
        messages + (answer if isinstance(answer, list) else [{"role": "assistant", "content": answer}]),
        tokenize=False)
    prompt_ids = tokenizer(head, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(whole[len(head):], add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + answer_ids])
    with torch.no_grad():
        logps = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
    total = sum(float(logps[len(prompt_ids) + k - 1, t]) for k, t in enumerate(answer_ids))
    return total, len(answer_ids)


def _hand(models, pair):
    """(policy chosen, policy rejected, reference chosen, reference rejected, chosen tokens, rejected tokens)."""
    policy, base, tokenizer = models
    pc, nc = _answer_logp(policy, tokenizer, pair["prompt"], pair["chosen"])
    pr, nr = _answer_logp(policy, tokenizer, pair["prompt"], pair["rejected"])
    rc, _ = _answer_logp(base, tokenizer, pair["prompt"], pair["chosen"])
    rr, _ = _answer_logp(base, tokenizer, pair["prompt"], pair["rejected"])
    return pc, pr, rc, rr, nc, nr


def _sigmoid_loss(x: float, smoothing: float = 0.0) -> float:
    logsig = lambda v: -math.log1p(math.exp(-v))  # noqa: E731
    return -logsig(x) * (1 - smoothing) - logsig(-x) * smoothing


def _objective_loss(models, loss, **settings) -> float:
    policy, _, tokenizer = models
    objective = PreferenceObjective(tokenizer, 128, PreferenceConfig(loss=loss, **settings))
    batch = objective.collate(objective.encode(PAIRS))
    with torch.no_grad():
        return float(objective.loss_sum(policy, batch))


def test_dpo_with_label_smoothing_equals_a_hand_computation(models):
    expected = 0.0
    for pair in PAIRS:
        pc, pr, rc, rr, _, _ = _hand(models, pair)
        expected += _sigmoid_loss(0.3 * ((pc - rc) - (pr - rr)), 0.1)
    assert _objective_loss(models, "dpo", beta=0.3, label_smoothing=0.1) == pytest.approx(expected, abs=1e-4)


def test_ipo_averages_the_log_ratios_per_token(models):
    expected = 0.0
    for pair in PAIRS:
        pc, pr, rc, rr, nc, nr = _hand(models, pair)
        expected += ((pc - rc) / nc - (pr - rr) / nr - 1 / (2 * 0.2)) ** 2
    assert _objective_loss(models, "ipo", beta=0.2) == pytest.approx(expected, rel=1e-5)


def test_simpo_needs_no_reference_and_asks_for_a_margin(models):
    expected = 0.0
    for pair in PAIRS:
        pc, pr, _, _, nc, nr = _hand(models, pair)
        expected += _sigmoid_loss(2.0 * (pc / nc - pr / nr - 0.8 / 2.0))
    assert _objective_loss(models, "simpo", beta=2.0, simpo_gamma=0.8) == pytest.approx(expected, abs=1e-4)


def test_orpo_is_the_chosen_nll_minus_the_weighted_log_odds_ratio(models):
    nll_sum, tokens, odds = 0.0, 0, 0.0
    for pair in PAIRS:
        pc, pr, _, _, nc, nr = _hand(models, pair)
        nll_sum, tokens = nll_sum - pc, tokens + nc
        a, b = pc / nc, pr / nr
        log_odds = (a - b) - (math.log(1 - math.exp(a)) - math.log(1 - math.exp(b)))
        odds += -math.log1p(math.exp(-log_odds))
    # As TRL: the NLL is the token mean over the batch's chosen answers; the loss is per pair.
    expected = len(PAIRS) * (nll_sum / tokens) - 0.25 * odds
    assert _objective_loss(models, "orpo", orpo_lambda=0.25) == pytest.approx(expected, abs=1e-4)


def test_kto_weighs_desirable_and_undesirable_answers_around_the_kl_estimate(models):
    policy, base, tokenizer = models
    objective = PreferenceObjective(tokenizer, 128, PreferenceConfig(loss="kto", beta=0.5, desirable_weight=1.5,
                                                                     undesirable_weight=0.7))
    rows = [{"prompt": "write a review.", "completion": "a wonderful film", "label": True},
            {"prompt": "rate it", "completion": "bad, truly bad", "label": False},
            {"prompt": "and this one?", "completion": "lovely", "label": True}]
    batch = objective.collate(objective.encode(rows))
    with torch.no_grad():
        got = float(objective.loss_sum(policy, batch))

    def ratio(prompt, answer):
        return _answer_logp(policy, tokenizer, prompt, answer)[0] - _answer_logp(base, tokenizer, prompt, answer)[0]

    # Each answer's KL partner is the next row's answer to this row's prompt.
    kl = max(0.0, sum(ratio(rows[i]["prompt"], rows[(i + 1) % 3]["completion"]) for i in range(3)) / 3)
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    expected = sum(1.5 * (1 - sig(0.5 * (ratio(r["prompt"], r["completion"]) - kl))) if r["label"]
                   else 0.7 * (1 - sig(0.5 * (kl - ratio(r["prompt"], r["completion"])))) for r in rows)
    assert got == pytest.approx(expected, abs=1e-4)
    assert objective.drain_stats()["kl"] == pytest.approx(kl, abs=1e-4)


def test_the_adapter_disabled_reference_gives_exactly_the_base_models_logits(models):
    policy, base, tokenizer = models
    ids = torch.tensor([tokenizer("the film was wonderful")["input_ids"]])
    with torch.no_grad():
        reference = base(input_ids=ids).logits
        assert not torch.allclose(policy(input_ids=ids).logits, reference)
        with adapters_disabled(policy):
            assert torch.equal(policy(input_ids=ids).logits, reference)
        assert not torch.allclose(policy(input_ids=ids).logits, reference)  # the adapter is back


def test_precomputed_reference_log_probs_give_the_same_loss_and_gradients(models):
    policy, base, tokenizer = models
    objective = PreferenceObjective(tokenizer, 128, PreferenceConfig(loss="dpo"))
    features = objective.encode(PAIRS)
    cached = [dict(f, ref=r) for f, r in zip(features, objective.precompute_reference(base, features, 2, "cpu"))]
    grads = []
    for batch in (objective.collate(features), objective.collate(cached)):
        policy.zero_grad()
        loss = objective.loss_sum(policy, batch)
        loss.backward()
        grads.append((float(loss.detach()), [p.grad.clone() for p in policy.parameters() if p.requires_grad]))
    assert grads[0][0] == pytest.approx(grads[1][0], abs=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads[0][1], grads[1][1]))
    policy.zero_grad()


def test_a_frozen_reference_copy_is_used_when_there_are_no_adapters(models):
    _, base, tokenizer = models
    objective = PreferenceObjective(tokenizer, 128, PreferenceConfig(loss="dpo"))
    batch = objective.collate(objective.encode(PAIRS))
    moved = AutoModelForCausalLM.from_config(base.config).eval()  # another model: the "policy"
    objective.reference_model = base
    with torch.no_grad():
        ref = objective.reference_logps(moved, batch)
        assert torch.allclose(ref, objective.answer_logps(base, batch)[0])
        assert not torch.allclose(ref, objective.answer_logps(moved, batch)[0])


@pytest.mark.parametrize("padding_free,pack_limit", [(False, 2048), (True, 2048), (True, 20)])
def test_padding_packing_and_batch_composition_do_not_change_an_answers_log_prob(models, padding_free, pack_limit,
                                                                                monkeypatch):
    policy, _, tokenizer = models
    # Above the limit a padding-free objective pads too: one packed row's attention grows with its square.
    monkeypatch.setattr("tunesmith.objectives.preference.PACKED_TOKENS_MAX", pack_limit)
    objective = PreferenceObjective(tokenizer, 128, PreferenceConfig(loss="dpo"), padding_free=padding_free)
    features = objective.encode(PAIRS)
    batch = objective.collate(features)
    assert batch["input_ids"].shape[0] == (1 if padding_free and pack_limit > 20 else 6)
    with torch.no_grad():
        together, counts = objective.answer_logps(policy, batch)
    for i, pair in enumerate(PAIRS):
        for j, key in ((i, "chosen"), (i + 3, "rejected")):
            alone, n = _answer_logp(policy, tokenizer, pair["prompt"], pair[key])
            assert float(together[j]) == pytest.approx(alone, abs=1e-4) and int(counts[j]) == n


def test_a_long_prompt_loses_its_start_and_both_answers_stay_whole(models):
    _, _, tokenizer = models
    objective = PreferenceObjective(tokenizer, 24, PreferenceConfig(loss="dpo"))
    pair = {"prompt": "word " * 80 + "the end", "chosen": "a wonderful film", "rejected": "bad"}
    (feature,) = objective.encode([pair])
    assert len(feature["prompt"]) + len(feature["chosen"]) == 24
    _, chosen = objective._render(pair["prompt"], pair["chosen"])
    assert feature["chosen"] == chosen
    assert objective.overlength_report["rows"] == 0


def test_a_paired_loss_given_thumbs_up_rows_names_the_row(models):
    _, _, tokenizer = models
    objective = PreferenceObjective(tokenizer, 64, PreferenceConfig(loss="dpo"))
    rows = PAIRS[:1] + [{"prompt": "p", "completion": "c", "label": True, "_where": "votes.jsonl line 2"}]
    with pytest.raises(DataError, match="votes.jsonl line 2 is an unpaired"):
        objective.encode(rows)


def test_kto_splits_pairs_into_a_desirable_and_an_undesirable_answer(models):
    _, _, tokenizer = models
    objective = PreferenceObjective(tokenizer, 64, PreferenceConfig(loss="kto"))
    features = objective.encode(PAIRS)
    assert [f["desirable"] for f in features] == [1, 1, 1, 0, 0, 0]
    # KL partners: the next answer, which belongs to another prompt here.
    assert features[0]["kl_completion"] == features[1]["completion"]
    assert features[5]["kl_completion"] == features[0]["completion"]


def test_unpaired_pairwise_accuracy_compares_every_desirable_with_every_undesirable_answer():
    outputs = {"chosen": [0.5, 2.0], "rejected": [1.0, -1.0, 3.0], "unpaired": True}
    assert METRICS["pairwise_accuracy"].fn(outputs) == pytest.approx(3 / 6)
    assert METRICS["mean_margin"].fn(outputs) == pytest.approx(1.25 - 1.0)
    assert METRICS["pairwise_accuracy"].fn({"chosen": [1.0, 0.0], "rejected": [0.0, 0.0]}) == 0.5  # a tie is wrong


def test_evaluation_splits_batches_to_stay_packed_and_scores_the_same(models, monkeypatch):
    policy, _, tokenizer = models
    objective = PreferenceObjective(tokenizer, 128, PreferenceConfig(loss="dpo"))
    features = objective.encode(PAIRS * 4)
    whole = objective.outputs(policy, features, 64, "cpu")
    sizes = [len(f["prompt"]) + len(f["chosen"]) + len(f["rejected"]) for f in features]  # the prompt once
    limit = 2 * max(sizes)
    monkeypatch.setattr("tunesmith.objectives.preference.PACKED_TOKENS_MAX", limit)
    parts = list(objective.packable_parts(features, 64))
    assert [f for part in parts for f in part] == features and len(parts) > 2
    assert all(sum(len(f["prompt"]) + len(f["chosen"]) + len(f["rejected"]) for f in part) <= limit
               for part in parts)
    split = objective.outputs(policy, features, 64, "cpu")
    assert split["chosen"] == pytest.approx(whole["chosen"], abs=1e-5)
    assert split["rejected"] == pytest.approx(whole["rejected"], abs=1e-5)
    assert split["loss"] == pytest.approx(whole["loss"], abs=1e-6)
