"""train.regularize: EWC and L2-SP penalties, their Fisher, their gradients, and their pull."""

from __future__ import annotations

import pytest
import torch
from tunesmith.errors import ConfigError
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from tunesmith.config.load import load_recipe
from tunesmith.config.train_section import RegularizeConfig
from tunesmith.objectives.causal_lm import CausalLMObjective
from tunesmith.runner import run_recipe
from tunesmith.synthetic import chat_rows
from tunesmith.testing import write_chat_recipe, write_cls_recipe
from tunesmith.train.regularize import build_regularizer, lora_layers


def _lora_model(tiny_llama_dir):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    return get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama_dir),
                          LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))


def _examples(tiny_llama_dir, n=3):
    objective = CausalLMObjective(AutoTokenizer.from_pretrained(tiny_llama_dir), 64)
    features = objective.encode(chat_rows(n))

    def loss(m, batch):
        return objective.loss_sum(m, batch) / objective.count_targets(batch)

    return [(objective.collate([f]), loss) for f in features]


def test_ewc_penalty_is_zero_at_the_start_and_rises_as_the_delta_grows(tiny_llama_dir):
    model = _lora_model(tiny_llama_dir)
    reg = build_regularizer(RegularizeConfig(type="ewc", weight=2.0), model, _examples(tiny_llama_dir))
    assert reg.info["tensors"] == 4 and reg.info["fisher_samples"] == 3  # q and v of 2 layers
    assert float(reg.penalty()) == 0.0  # LoRA's B starts at zero: no change to the base yet
    values = []
    for scale in (0.01, 0.02, 0.04):
        with torch.no_grad():
            for _, layer in lora_layers(model):
                layer.lora_B["default"].weight.fill_(scale)
        values.append(float(reg.penalty()))
    assert 0 < values[0] < values[1] < values[2]
    assert values[2] == pytest.approx(4 * values[1], rel=1e-4)  # quadratic in the change


def _by_hand(model, examples):
    """Each adapted base matrix's summed squared per-example gradients (adapters off), and their
    scale to mean 1 over every element."""
    bases = [layer.get_base_layer().weight for _, layer in lora_layers(model)]
    squares = [torch.zeros_like(b) for b in bases]
    for b in bases:
        b.requires_grad_(True)
    with model.disable_adapter():
        for batch, loss in examples:
            for s, g in zip(squares, torch.autograd.grad(loss(model, batch), bases)):
                s += g ** 2
    for b in bases:
        b.requires_grad_(False)
    scale = sum(s.numel() for s in squares) / sum(float(s.sum()) for s in squares)
    return [s * scale for s in squares]


def _factored(fisher_matrix):
    """The rank-one form the penalty uses: row sums x column sums / total."""
    return torch.outer(fisher_matrix.sum(1), fisher_matrix.sum(0)) / fisher_matrix.sum()


def test_the_fisher_is_the_mean_squared_example_gradient_and_the_penalty_its_factored_sum(tiny_llama_dir):
    model = _lora_model(tiny_llama_dir)
    examples = _examples(tiny_llama_dir)
    reg = build_regularizer(RegularizeConfig(type="ewc", weight=1.0), model, examples)
    # The base matrices' gradients were on for the estimate only.
    assert not any(layer.get_base_layer().weight.requires_grad for _, layer in lora_layers(model))
    fishers = _by_hand(model, examples)
    mean = sum(float(f.sum()) for f in fishers) / sum(f.numel() for f in fishers)
    assert mean == pytest.approx(1.0, rel=1e-5)
    for (name, _), f in zip(lora_layers(model), fishers):
        rows, cols, total = reg.fisher[name]
        assert torch.allclose(rows, f.sum(1), rtol=1e-4) and torch.allclose(cols, f.sum(0), rtol=1e-4)
        assert total == pytest.approx(float(f.sum()), rel=1e-4)
    # The penalty computed in the adapter's rank = the sum over the materialised B A.
    torch.manual_seed(1)
    with torch.no_grad():
        for _, layer in lora_layers(model):
            layer.lora_B["default"].weight.normal_(0, 0.05)
    expected = 0.0
    for (_, layer), f in zip(lora_layers(model), fishers):
        delta = layer.get_delta_weight("default")
        expected += float((_factored(f) * delta ** 2).sum())
    assert float(reg.penalty()) == pytest.approx(0.5 * expected, rel=1e-4)


def test_the_penalty_gradient_matches_the_formula(tiny_llama_dir):
    model = _lora_model(tiny_llama_dir)
    examples = _examples(tiny_llama_dir)
    reg = build_regularizer(RegularizeConfig(type="ewc", weight=0.5), model, examples)
    fishers = [_factored(f) for f in _by_hand(model, examples)]
    torch.manual_seed(1)
    with torch.no_grad():
        for _, layer in lora_layers(model):
            layer.lora_B["default"].weight.normal_(0, 0.05)
    reg.penalty().backward()
    for f, (_, layer) in zip(fishers, lora_layers(model)):
        a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
        s = layer.scaling["default"]
        delta = s * b.detach() @ a.detach()
        # d/dB [w/2 sum F (s B A)^2] = w s (F * delta) A^T, and d/dA = w s B^T (F * delta).
        assert torch.allclose(b.grad, 0.5 * s * (f * delta) @ a.detach().T, rtol=1e-3, atol=1e-7)
        assert torch.allclose(a.grad, 0.5 * s * b.detach().T @ (f * delta), rtol=1e-3, atol=1e-7)


def test_l2sp_on_lora_is_the_squared_norm_of_the_change(tiny_llama_dir):
    model = _lora_model(tiny_llama_dir)
    reg = build_regularizer(RegularizeConfig(type="l2sp", weight=2.0), model)
    with torch.no_grad():
        for _, layer in lora_layers(model):
            layer.lora_B["default"].weight.normal_(0, 0.05)
    expected = sum(float((layer.get_delta_weight("default") ** 2).sum()) for _, layer in lora_layers(model))
    assert float(reg.penalty()) == pytest.approx(expected, rel=1e-4)  # 2/2 x the sum


def test_l2sp_on_full_weights_is_the_squared_distance(tiny_bert_dir):
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2)
    reg = build_regularizer(RegularizeConfig(type="l2sp", weight=3.0), model)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    expected = 1.5 * sum(((p - start[n]) ** 2).sum() for n, p in model.named_parameters())
    assert float(reg.penalty()) == pytest.approx(float(expected), rel=1e-5)


def _distance(run, base_dir) -> float:
    trained = load_file(str(run / "final" / "model.safetensors"))
    base = {f"bert.{k}": v for k, v in load_file(str(base_dir / "model.safetensors")).items()}  # a bare BertModel
    shared = [k for k in base if k in trained]
    assert len(shared) == len(base)
    return float(sum(((trained[k] - base[k]) ** 2).sum() for k in shared))


def test_l2sp_keeps_a_full_fine_tune_closer_to_its_start(tmp_path, tiny_bert_dir):
    distances = {}
    for label, sets in {"none": [], "l2sp": ["train.regularize.type=l2sp", "train.regularize.weight=50"]}.items():
        (tmp_path / label).mkdir()
        recipe = write_cls_recipe(tmp_path / label, tiny_bert_dir)
        config = load_recipe(recipe, ["method.type=full", "train.epochs=2", "train.lr=1e-3", *sets])
        summary = run_recipe(config, base_dir=tmp_path / label, show_progress=False, log=lambda *_: None)
        distances[label] = _distance(tmp_path / label / "runs" / "tiny-cls", tiny_bert_dir)
    assert summary["regularize"]["type"] == "l2sp" and summary["regularize"]["penalty_end"] > 0
    assert distances["l2sp"] < 0.5 * distances["none"], distances


def test_ewc_runs_through_a_chat_recipe(tmp_path, tiny_llama_dir):
    recipe = write_chat_recipe(tmp_path, tiny_llama_dir)
    config = load_recipe(recipe, ["train.regularize.type=ewc", "train.regularize.weight=1",
                                  "train.regularize.fisher_samples=8", "train.max_steps=3"])
    summary = run_recipe(config, base_dir=tmp_path, show_progress=False, log=lambda *_: None)
    info = summary["regularize"]
    assert info["data"] == "builtin:chatterbot" and info["fisher_samples"] == 8
    assert info["penalty_end"] > 0  # the adapter moved the base matrices after 3 steps


def test_regularize_settings_are_checked(tmp_path, tiny_bert_dir):
    recipe = write_cls_recipe(tmp_path, tiny_bert_dir)
    with pytest.raises(ConfigError, match="train.regularize.data"):
        load_recipe(recipe, ["train.regularize.type=ewc", "train.regularize.weight=1"])
    with pytest.raises(ConfigError, match="weight"):
        load_recipe(recipe, ["train.regularize.type=l2sp"])
    with pytest.raises(ConfigError, match="use type: l2sp"):
        load_recipe(recipe, ["method.type=qlora", "train.regularize.type=ewc", "train.regularize.weight=1",
                             "train.regularize.data=train.jsonl"])
