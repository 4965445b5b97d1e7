"""Packing: each chat attends only to itself, so the packed loss equals the unpacked loss."""

from __future__ import annotations

import pytest
import torch

from tunesmith.data.packing import pack_features, packing_efficiency
from tunesmith.models.load import load_model
from tunesmith.objectives.causal_lm import CausalLMObjective


def _chats():
    questions = ["hi", "what is the weather like on the coast in late autumn?", "who are you?", "2+2?",
                 "tell me a long story about a lighthouse keeper and a storm", "ok", "name three colours"]
    answers = ["hello", "windy and grey, with bright spells", "i am quill.", "4",
               "once, on a rock far out at sea, a keeper named ada watched the sky turn black", "fine", "red, blue, green"]
    return [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
            for q, a in zip(questions, answers)]


@pytest.fixture(scope="module")
def setup(tiny_llama_dir):
    torch.manual_seed(0)
    model, tokenizer = load_model(str(tiny_llama_dir), "causal_lm")
    objective = CausalLMObjective(tokenizer, 64, "be brief.")
    return model.eval(), objective, objective.encode(_chats())


def test_every_example_lands_whole_in_one_row(setup):
    _, _, features = setup
    rows = pack_features(features, 64)
    assert len(rows) < len(features) and all(len(r["input_ids"]) <= 64 for r in rows)
    assert sum(r["num_examples"] for r in rows) == len(features)
    assert sorted(len(f["input_ids"]) for f in features) == sorted(
        n for r in rows for n in _segment_lengths(r["position_ids"]))
    stats = packing_efficiency(features, rows, 64)
    assert stats["fill"] > sum(len(f["input_ids"]) for f in features) / (len(features) * 64)


def _segment_lengths(positions):
    starts = [i for i, p in enumerate(positions) if p == 0] + [len(positions)]
    return [b - a for a, b in zip(starts, starts[1:])]


@torch.no_grad()
def test_packed_loss_equals_unpacked_loss(setup):
    model, objective, features = setup
    unpacked = objective.collate(features)
    packed = objective.collate(pack_features(features, 64))
    assert objective.count_targets(unpacked) == objective.count_targets(packed)
    expected = objective.loss_sum(model, unpacked)
    got = objective.loss_sum(model, packed)
    assert torch.allclose(got, expected, rtol=1e-5), (got, expected)
    assert int(packed["num_examples"]) == len(features)


@torch.no_grad()
def test_a_packed_example_does_not_see_its_neighbours(setup):
    model, objective, features = setup
    first, second = features[0], features[1]
    row = pack_features([first, second], 128)[0]  # the longer one comes first
    batch = objective.collate([row])
    logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
    n = len(second["input_ids"])
    alone = model(input_ids=torch.tensor([first["input_ids"]]), use_cache=False).logits[0]
    torch.testing.assert_close(logits[n:], alone, atol=1e-5, rtol=1e-5)
    # Changing the first example's tokens leaves the second's logits unchanged.
    changed = dict(row, input_ids=[(t + 1) % 100 for t in row["input_ids"][:n]] + row["input_ids"][n:])
    batch2 = objective.collate([changed])
    logits2 = model(input_ids=batch2["input_ids"], position_ids=batch2["position_ids"], use_cache=False).logits[0]
    torch.testing.assert_close(logits2[n:], logits[n:], atol=1e-6, rtol=1e-6)


def test_packed_gradients_equal_unpacked_gradients(setup, tiny_llama_dir):
    _, objective, features = setup
    model, _ = load_model(str(tiny_llama_dir), "causal_lm")
    grads = []
    for batch in (objective.collate(features), objective.collate(pack_features(features, 64))):
        model.zero_grad()
        objective.loss_sum(model, batch).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[1], grads[0], atol=1e-5, rtol=1e-4)


def test_training_with_packing_learns_and_reports_the_fill(chat_recipe, tmp_path):
    import json

    from tunesmith.cli import main

    assert main(["train", str(chat_recipe), "--set", "data.packing=true", "--set", "train.batch_size=2"]) == 0
    summary = json.loads((tmp_path / "runs" / "tiny-chat" / "summary.json").read_text())
    packing = summary["data"]["packing"]
    assert packing["examples"] == 50 and packing["rows"] == 25 and packing["fill"] > 0.5  # two chats per row
    assert summary["train"]["samples"] == 50 * 6  # examples, not packed rows, per epoch
    assert summary["eval_after"]["eval_loss"] < 0.9 * summary["eval_before"]["eval_loss"]
    assert main(["train", str(chat_recipe), "--set", "data.packing=true", "--set", "method.type=prompt",
                 "--overwrite"]) == 2
