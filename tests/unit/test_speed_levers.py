"""Speed levers change the cost of a step, never its result.

Padding-free batches and the targets-only LM head must give the padded, full-head loss
and gradients; prompt methods fall back to the plain path; the malloc setting applies.
"""

from __future__ import annotations

import pytest
import torch

from tunesmith.config.methods import LoraMethod, PromptMethod
from tunesmith.methods import apply_method
from tunesmith.models.load import load_model
from tunesmith.objectives.causal_lm import CausalLMObjective, supports_logits_to_keep
from tunesmith.train.memory import fix_mmap_threshold
from tunesmith.train.sampler import epoch_windows

from tests.unit.test_packing import _chats


@pytest.fixture(scope="module")
def model_and_features(tiny_llama_dir):
    torch.manual_seed(0)
    model, tokenizer = load_model(str(tiny_llama_dir), "causal_lm")
    features = CausalLMObjective(tokenizer, 64, "be brief.").encode(_chats())
    return model, tokenizer, features


def _objective(tokenizer, **levers):
    return CausalLMObjective(tokenizer, 64, "be brief.", **levers)


def _loss_and_grads(model, objective, features):
    model.zero_grad()
    batch = objective.collate(features)
    loss = objective.loss_sum(model, batch)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads, batch


@pytest.mark.parametrize("levers", [{"padding_free": True}, {"head_on_targets": False},
                                    {"padding_free": True, "head_on_targets": False}])
def test_levers_give_the_plain_padded_loss_and_gradients(model_and_features, levers):
    model, tokenizer, features = model_and_features
    plain = _objective(tokenizer, head_on_targets=False)
    expected_loss, expected_grads, padded = _loss_and_grads(model, plain, features)
    objective = _objective(tokenizer, **levers)
    loss, grads, batch = _loss_and_grads(model, objective, features)
    torch.testing.assert_close(loss, expected_loss, rtol=1e-5, atol=1e-5)
    assert grads.keys() == expected_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], expected_grads[name], rtol=1e-4, atol=1e-5, msg=lambda m: f"{name}: {m}")
    assert objective.count_targets(batch) == plain.count_targets(padded)


def test_padding_free_batch_is_one_row_without_padding(model_and_features):
    _, tokenizer, features = model_and_features
    padded = _objective(tokenizer).collate(features)
    flat = _objective(tokenizer, padding_free=True).collate(features)
    assert flat["input_ids"].shape == (1, sum(len(f["input_ids"]) for f in features))
    assert int(padded["attention_mask"].sum()) == flat["input_ids"].numel() < padded["input_ids"].numel()
    assert int(flat["num_examples"]) == len(features)
    assert not _objective(tokenizer, padding_free=True).pads_batches


def test_targets_only_head_runs_the_vocabulary_projection_on_answers_only(model_and_features):
    model, tokenizer, features = model_and_features
    seen = []
    hook = model.get_output_embeddings().register_forward_hook(lambda m, i, out: seen.append(out.shape[1]))
    try:
        objective = _objective(tokenizer)
        batch = objective.collate(features)
        with torch.no_grad():
            objective.loss_sum(model, batch)
    finally:
        hook.remove()
    answer_positions = int((batch["labels"][:, 1:] != -100).any(0).sum())
    assert seen == [answer_positions] and answer_positions < batch["input_ids"].shape[1] - 1


def test_prompt_methods_keep_the_full_head(tiny_llama_dir):
    model, tokenizer = load_model(str(tiny_llama_dir), "causal_lm")
    prompt_tuned = apply_method(model, PromptMethod(num_virtual_tokens=4), "causal_lm")
    assert not supports_logits_to_keep(prompt_tuned)
    model, _ = load_model(str(tiny_llama_dir), "causal_lm")
    assert supports_logits_to_keep(apply_method(model, LoraMethod(r=2), "causal_lm"))
    objective = _objective(tokenizer)
    batch = objective.collate(objective.encode(_chats()[:3]))
    loss = objective.loss_sum(prompt_tuned, batch)

    # By hand: the full head's logits, the virtual-token positions cut off, the next token's
    # label at each remaining position, padding and prompts (-100) ignored, summed.
    virtual = prompt_tuned.peft_config["default"].num_virtual_tokens
    assert virtual == 4
    with torch.no_grad():
        logits = prompt_tuned(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert logits.shape[1] == virtual + batch["input_ids"].shape[1]
    targets = batch["labels"][:, 1:]
    kept = targets != -100
    assert kept.any()

    def summed_ce(position_logits):
        return torch.nn.functional.cross_entropy(position_logits[kept].float(), targets[kept], reduction="sum")

    expected = summed_ce(logits[:, virtual:-1])
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-5, atol=1e-4)
    # Misaligned by the virtual tokens, the same sum would differ: the check above can tell.
    misaligned = summed_ce(logits[:, : batch["input_ids"].shape[1] - 1])
    assert not torch.isclose(misaligned, expected, rtol=1e-3)


def test_ungrouped_windows_are_the_plain_shuffle():
    grouped = epoch_windows(100, 8, 1, seed=3, epoch=0, lengths=list(range(100)))
    plain = epoch_windows(100, 8, 1, seed=3, epoch=0)
    assert sorted(i for w in plain for b in w for i in b) == list(range(100))
    assert grouped != plain
    # grouped micro-batches hold neighbours in length; plain ones are spread out
    spread = lambda windows: sum(max(b) - min(b) for w in windows for b in w)  # noqa: E731
    assert spread(grouped) < spread(plain) / 4


def test_mmap_threshold_applies_on_linux():
    import sys

    assert fix_mmap_threshold(1 << 20) is sys.platform.startswith("linux")
