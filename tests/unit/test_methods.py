"""Method builders on tiny random models: which parameters train."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, LlamaConfig, LlamaForCausalLM

from tunesmith.config.schema import FreezeMethod, FullMethod, LoraMethod
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
