"""Method builders on tiny random models: which parameters train."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, LlamaConfig, LlamaForCausalLM

from tunesmith.config.methods import FreezeMethod, FullMethod, LoraMethod
from tunesmith.errors import ConfigError
from tunesmith.methods import apply_method, count_parameters
from tunesmith.methods.lora import DEFAULT_TARGETS, default_targets

SIZES = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)


def bert():
    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(num_labels=3, **SIZES))


def llama(tie: bool = False):
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(num_key_value_heads=4, tie_word_embeddings=tie, **SIZES))


def trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def everything(model) -> set[str]:
    return {n for n, _ in model.named_parameters()}


def test_full_trains_everything():
    model = bert()
    model.requires_grad_(False)
    model = apply_method(model, FullMethod(), "classification")
    assert trainable(model) == everything(model)
    assert count_parameters(model)[0] == count_parameters(model)[1] == sum(p.numel() for p in model.parameters())


def test_freeze_head_only_bert():
    model = apply_method(bert(), FreezeMethod(), "classification")
    assert trainable(model) == {
        "classifier.weight",
        "classifier.bias",
        "bert.pooler.dense.weight",
        "bert.pooler.dense.bias",
    }


def test_freeze_head_only_llama():
    model = apply_method(llama(), FreezeMethod(), "causal_lm")
    assert trainable(model) == {"lm_head.weight"}


def test_freeze_last_layer_bert():
    model = apply_method(bert(), FreezeMethod(train_last_n_layers=1), "classification")
    names = trainable(model)
    assert {n for n in names if n.startswith("bert.encoder.layer.1.")} == {
        n for n in everything(model) if n.startswith("bert.encoder.layer.1.")
    }
    assert not any(n.startswith(("bert.encoder.layer.0.", "bert.embeddings.")) for n in names)
    assert names - {n for n in names if n.startswith("bert.encoder.layer.1.")} == {
        "classifier.weight",
        "classifier.bias",
        "bert.pooler.dense.weight",
        "bert.pooler.dense.bias",
    }


def test_freeze_last_layer_llama_includes_final_norm():
    model = apply_method(llama(), FreezeMethod(train_last_n_layers=1), "causal_lm")
    last = {n for n in everything(model) if n.startswith("model.layers.1.")}
    assert trainable(model) == last | {"model.norm.weight", "lm_head.weight"}
    assert "model.layers.1.input_layernorm.weight" in last  # the block's own norms train with it


def test_freeze_all_layers_leaves_only_embeddings_frozen():
    model = apply_method(llama(), FreezeMethod(train_last_n_layers=2), "causal_lm")
    assert everything(model) - trainable(model) == {"model.embed_tokens.weight"}


@pytest.mark.parametrize(("build", "task"), [(bert, "classification"), (llama, "causal_lm")])
def test_freeze_more_layers_than_exist_is_config_error(build, task):
    with pytest.raises(ConfigError, match="only 2 layers"):
        apply_method(build(), FreezeMethod(train_last_n_layers=3), task)


def test_freeze_without_a_head_is_config_error():
    with pytest.raises(ConfigError, match="no task head"):
        apply_method(llama(), FreezeMethod(), "classification")


def test_lora_bert_trains_adapters_and_classification_head():
    model = apply_method(bert(), LoraMethod(r=4, alpha=8, dropout=0.0), "classification")
    names = trainable(model)
    lora = {n for n in names if ".lora_" in n}
    heads = names - lora
    assert heads and all(".modules_to_save.default." in n for n in heads)
    assert {n.split(".modules_to_save")[0].split(".")[-1] for n in heads} == {"classifier", "pooler"}
    # default targets for BERT: query/key/value in both layers, A and B each
    adapted = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in lora}
    assert adapted == {"query", "key", "value"}
    assert len(lora) == 2 * 3 * 2
    a = model.get_parameter(next(n for n in lora if "lora_A" in n))
    assert a.shape == (4, 32)
    # the original dense weights are frozen
    assert not any("attention.self.query.base_layer" in n for n in names)


def test_lora_llama_targets_attention_and_mlp():
    model = apply_method(llama(), LoraMethod(), "causal_lm")
    names = trainable(model)
    assert names and all(".lora_A." in n or ".lora_B." in n for n in names)
    adapted = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in names}
    assert adapted == set(DEFAULT_TARGETS["llama"])
    assert len(names) == 2 * 7 * 2


def test_lora_explicit_targets_override_defaults():
    model = apply_method(llama(), LoraMethod(target_modules=["q_proj"]), "causal_lm")
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable(model)} == {"q_proj"}


def test_lora_unknown_target_is_config_error():
    with pytest.raises(ConfigError, match="target_modules"):
        apply_method(llama(), LoraMethod(target_modules=["no_such_module"]), "causal_lm")


def test_default_targets_per_architecture():
    assert default_targets(bert()) == ["query", "key", "value"]
    assert default_targets(llama()) == DEFAULT_TARGETS["llama"]
    unknown = llama()
    unknown.config.model_type = "something-new"
    assert default_targets(unknown) == "all-linear"


def test_lora_keeps_outputs_at_start():
    model = llama()
    ids = torch.randint(0, 100, (1, 8))
    with torch.no_grad():
        before = model(input_ids=ids).logits
        wrapped = apply_method(model, LoraMethod(dropout=0.0), "causal_lm")
        wrapped.eval()
        after = wrapped(input_ids=ids).logits
    torch.testing.assert_close(before, after)  # B starts at zero


def test_count_parameters_counts_tied_weights_once():
    model = llama(tie=True)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    unique = {id(p): p.numel() for p in model.parameters()}
    embed = 100 * 32
    assert count_parameters(model) == (sum(unique.values()), sum(unique.values()))
    assert count_parameters(model)[1] == count_parameters(llama(tie=False))[1] - embed


def test_count_parameters_splits_trainable():
    model = apply_method(llama(), LoraMethod(r=2), "causal_lm")
    trainable_n, total = count_parameters(model)
    # per layer: A (2 x in) + B (out x 2) for q,k,v,o (32->32), gate/up (32->64), down (64->32)
    per_layer = 4 * (2 * 32 + 32 * 2) + 2 * (2 * 32 + 64 * 2) + (2 * 64 + 32 * 2)
    assert trainable_n == 2 * per_layer
    assert total == count_parameters(llama())[1] + trainable_n


def test_freeze_train_patterns_add_matching_parameters():
    from tunesmith.config.methods import FreezeMethod as F

    model = apply_method(bert(), F(train_patterns=[r"attention\.output\.LayerNorm"]), "classification")
    extra = {n for n in trainable(model) if "LayerNorm" in n}
    assert extra == {f"bert.encoder.layer.{i}.attention.output.LayerNorm.{w}" for i in (0, 1) for w in ("weight", "bias")}


@pytest.mark.parametrize(("pattern", "message"), [("no_such_param", "matches no parameter"), ("(", "not a valid regular")])
def test_freeze_bad_patterns_are_config_errors(pattern, message):
    from tunesmith.config.methods import FreezeMethod as F

    with pytest.raises(ConfigError, match=message):
        apply_method(bert(), F(train_patterns=[pattern]), "classification")


def test_lora_plus_puts_b_matrices_in_a_faster_group():
    from tunesmith.train.optim import build_optimizer

    model = apply_method(llama(), LoraMethod(r=2, lora_plus_ratio=16), "causal_lm")
    optimizer = build_optimizer(model, lr=1e-4, weight_decay=0.0)
    by_lr = {g["lr"]: g["params"] for g in optimizer.param_groups}
    assert set(by_lr) == {1e-4, 1.6e-3}
    names = {id(p): n for n, p in model.named_parameters()}
    assert all("lora_B" in names[id(p)] for p in by_lr[1.6e-3])
    assert all("lora_A" in names[id(p)] for p in by_lr[1e-4])


def test_rslora_scales_by_alpha_over_sqrt_r():
    model = apply_method(llama(), LoraMethod(r=16, alpha=8, use_rslora=True), "causal_lm")
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    assert layer.scaling["default"] == pytest.approx(8 / 16**0.5)


def test_dora_learns_a_magnitude_vector():
    model = apply_method(llama(), LoraMethod(r=2, use_dora=True), "causal_lm")
    assert any("lora_magnitude_vector" in n for n in trainable(model))


def test_pissa_starts_from_the_same_outputs_with_the_principal_directions_moved():
    from tunesmith.config.methods import LoraMethod as L

    model = llama()
    ids = torch.randint(0, 100, (1, 8))
    weight = model.model.layers[0].self_attn.q_proj.weight.detach().clone()
    with torch.no_grad():
        before = model(input_ids=ids).logits
        wrapped = apply_method(model, L(r=4, init="pissa", dropout=0.0), "causal_lm").eval()
        after = wrapped(input_ids=ids).logits
    torch.testing.assert_close(before, after, atol=1e-4, rtol=1e-4)
    residual = wrapped.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight
    assert not torch.allclose(residual, weight)  # the top singular directions now live in the adapter


def test_pissa_rejects_dropout_and_dora():
    with pytest.raises(ConfigError, match="dropout"):
        apply_method(llama(), LoraMethod(r=2, init="pissa", dropout=0.1), "causal_lm")
    with pytest.raises(ConfigError, match="DoRA"):
        apply_method(llama(), LoraMethod(r=2, init="pissa", dropout=0.0, use_dora=True), "causal_lm")


def test_qlora_needs_a_4_bit_base():
    from tunesmith.config.methods import QloraMethod

    with pytest.raises(ConfigError, match="4-bit"):
        apply_method(llama(), QloraMethod(), "causal_lm")


def test_adalora_needs_room_for_its_schedule():
    from tunesmith.config.methods import AdaloraMethod

    with pytest.raises(ConfigError, match="pruning steps"):
        apply_method(llama(), AdaloraMethod(tinit=0.5, tfinal=0.45), "causal_lm", total_steps=4)


def test_bitfit_trains_biases_and_the_head_only():
    from tunesmith.config.methods import BitfitMethod

    model = apply_method(bert(), BitfitMethod(), "classification")
    names = trainable(model)
    assert names == {n for n in everything(model) if n.endswith(".bias")} | {
        "classifier.weight", "bert.pooler.dense.weight"}


def test_prompt_text_init_starts_from_the_texts_embeddings(tiny_bert_dir):
    from tunesmith.config.methods import PromptMethod
    from tunesmith.models.load import load_model

    model, tokenizer = load_model(str(tiny_bert_dir), "classification", num_labels=2)
    embeddings = model.get_input_embeddings().weight.detach().clone()
    wrapped = apply_method(model, PromptMethod(num_virtual_tokens=3, init="text", init_text="great movie"), "classification")
    soft = wrapped.prompt_encoder["default"].embedding.weight
    ids = tokenizer("great movie")["input_ids"]  # PEFT tokenizes with special tokens, cut/repeated to fit
    assert len(ids) > 3
    expected = embeddings[ids[:3]]
    torch.testing.assert_close(soft.detach(), expected)
