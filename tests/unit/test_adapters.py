"""Bottleneck adapters on tiny random BERT / Llama models: placement, identity at init,
training, save/load and errors."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
)

from tunesmith.config.methods import AdapterMethod
from tunesmith.errors import ConfigError, ModelError
from tunesmith.methods.adapters import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    BottleneckAdapter,
    adapter_state_dict,
    apply_adapters,
    is_adapter_model,
    load_adapters,
    save_adapters,
)

SIZES = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
STYLES = ("houlsby", "pfeiffer", "parallel")
ADAPTERS_PER_BLOCK = {"houlsby": 2, "pfeiffer": 1, "parallel": 1}


def bert(seed: int = 0):
    torch.manual_seed(seed)
    return BertForSequenceClassification(BertConfig(num_labels=3, **SIZES)).eval()


def llama(seed: int = 0):
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(num_key_value_heads=4, tie_word_embeddings=False, **SIZES)).eval()


def llama_cls(seed: int = 0):
    torch.manual_seed(seed)
    cfg = LlamaConfig(num_key_value_heads=4, num_labels=3, pad_token_id=0, **SIZES)
    return LlamaForSequenceClassification(cfg).eval()


MODELS = {"bert": (bert, "classification"), "llama": (llama, "causal_lm")}


def batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 100, (4, 8), generator=g)
    return ids, torch.ones_like(ids)


def logits(model, ids, mask):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits


def trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def adapters_of(model) -> dict[str, BottleneckAdapter]:
    return {n: m for n, m in model.named_modules() if isinstance(m, BottleneckAdapter)}


def head_params(model, task) -> set[str]:
    if task != "classification":
        return set()
    heads = {"classifier", "score", "pooler"}
    return {n for n, _ in model.named_parameters() if heads & set(n.split("."))}


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("arch", MODELS)
def test_identity_at_init_and_trainable_names(arch, style):
    build, task = MODELS[arch]
    ids, mask = batch()
    base = build()
    expected = logits(base, ids, mask)
    base_names = {n for n, _ in base.named_parameters()}

    model = build()
    cfg = AdapterMethod(style=style, reduction_factor=4)
    out = apply_adapters(model, cfg, task)
    assert out is model
    assert is_adapter_model(model) and not is_adapter_model(base)
    assert model.tunesmith_adapter_config == cfg.model_dump()
    assert torch.equal(logits(model, ids, mask), expected)

    adapters = adapters_of(model)
    assert len(adapters) == ADAPTERS_PER_BLOCK[style] * SIZES["num_hidden_layers"]
    for a in adapters.values():
        assert a.down.weight.shape == (32 // 4, 32) and a.up.weight.shape == (32, 32 // 4)
        assert not a.up.weight.any() and not a.up.bias.any()
    suffix = {"houlsby": {"adapter_attn", "adapter_ffn"}, "pfeiffer": {"adapter_ffn"}, "parallel": {"adapter_ffn"}}
    assert {n.split(".")[-1] for n in adapters} == suffix[style]

    adapter_names = {f"{n}.{p}" for n, a in adapters.items() for p, _ in a.named_parameters()}
    heads = head_params(base, task)
    if task == "classification":
        assert heads and any(n.startswith("classifier.") for n in heads) and any("pooler" in n for n in heads)
    assert trainable(model) == adapter_names | heads
    # Base parameters keep their names (nothing wrapped), adapters are new names.
    assert {n for n, _ in model.named_parameters()} == base_names | adapter_names
    assert set(model.state_dict()) >= adapter_names


def test_llama_classification_trains_score_and_reduction_floor():
    model = apply_adapters(llama_cls(), AdapterMethod(style="pfeiffer", reduction_factor=64), "classification")
    score = {n for n, _ in model.named_parameters() if n.startswith("score.")}
    adapters = adapters_of(model)
    assert score and trainable(model) == score | {
        f"{n}.{p}" for n, a in adapters.items() for p, _ in a.named_parameters()
    }
    # 32 // 64 == 0 -> at least one unit
    assert all(a.bottleneck == 1 for a in adapters.values())


def test_placement_bert_houlsby_is_before_residual_layernorm():
    model = apply_adapters(bert(), AdapterMethod(style="houlsby", reduction_factor=4), "classification")
    layer = model.bert.encoder.layer[0]
    seen = {}
    layer.attention.output.LayerNorm.register_forward_pre_hook(lambda m, a: seen.__setitem__("attn_ln", a[0]))
    layer.output.LayerNorm.register_forward_pre_hook(lambda m, a: seen.__setitem__("ffn_ln", a[0]))
    layer.attention.output.register_forward_pre_hook(lambda m, a: seen.__setitem__("attn_res", a[1]))
    layer.output.register_forward_pre_hook(lambda m, a: seen.__setitem__("ffn_res", a[1]))
    captured = {}
    layer.attention.output.dense.register_forward_hook(lambda m, a, o: captured.__setitem__("attn", o))
    layer.output.dense.register_forward_hook(lambda m, a, o: captured.__setitem__("ffn", o))
    with torch.no_grad():
        for a in (layer.adapter_attn, layer.adapter_ffn):
            nn.init.normal_(a.up.weight)
            nn.init.normal_(a.up.bias)
    ids, mask = batch()
    logits(model, ids, mask)
    # The hooks registered above run after the adapter hooks, so they see h + adapter(h);
    # LayerNorm's input is that (dropout is off in eval) plus the residual.
    for kind, adapter in (("attn", layer.adapter_attn), ("ffn", layer.adapter_ffn)):
        h = captured[kind]
        assert torch.allclose(seen[f"{kind}_ln"], h + seen[f"{kind}_res"], atol=1e-6)
    # Recompute independently: dense(x) + adapter(dense(x)).
    x_holder = {}
    handle = layer.output.dense.register_forward_pre_hook(lambda m, a: x_holder.__setitem__("x", a[0]))
    logits(model, ids, mask)
    handle.remove()
    with torch.no_grad():
        raw = nn.functional.linear(x_holder["x"], layer.output.dense.weight, layer.output.dense.bias)
        torch.testing.assert_close(captured["ffn"], raw + layer.adapter_ffn(raw), atol=1e-6, rtol=0)


def test_placement_llama_houlsby_on_o_proj_and_down_proj():
    model = apply_adapters(llama(), AdapterMethod(style="houlsby", reduction_factor=4), "causal_lm")
    layer = model.model.layers[1]
    with torch.no_grad():
        for a in (layer.adapter_attn, layer.adapter_ffn):
            nn.init.normal_(a.up.weight)
    io = {}
    for name, mod in (("o", layer.self_attn.o_proj), ("d", layer.mlp.down_proj)):
        mod.register_forward_pre_hook(lambda m, a, name=name: io.__setitem__(name + "_in", a[0]))
        mod.register_forward_hook(lambda m, a, o, name=name: io.__setitem__(name + "_out", o))
    mlp_out = {}
    layer.mlp.register_forward_hook(lambda m, a, o: mlp_out.__setitem__("y", o))
    ids, mask = batch()
    logits(model, ids, mask)
    with torch.no_grad():
        pairs = (("o", layer.self_attn.o_proj, layer.adapter_attn), ("d", layer.mlp.down_proj, layer.adapter_ffn))
        for key, mod, adapter in pairs:
            raw = nn.functional.linear(io[key + "_in"], mod.weight, mod.bias)
            torch.testing.assert_close(io[key + "_out"], raw + adapter(raw), atol=1e-6, rtol=0)
    assert torch.equal(mlp_out["y"], io["d_out"])


@pytest.mark.parametrize("arch", MODELS)
def test_parallel_reads_ffn_input(arch):
    build, task = MODELS[arch]
    ids, mask = batch()
    model = apply_adapters(build(), AdapterMethod(style="parallel", reduction_factor=4, scaling=2.0), task)
    if arch == "bert":
        layer = model.bert.encoder.layer[0]
        ffn_in_mod, ffn_out_mod = layer.intermediate, layer.output.dense
    else:
        layer = model.model.layers[0]
        ffn_in_mod = ffn_out_mod = layer.mlp
    seen = {}
    ffn_in_mod.register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0]))
    ffn_out_mod.register_forward_pre_hook(lambda m, a: seen.__setitem__("pre", a[0]))
    ffn_out_mod.register_forward_hook(lambda m, a, o: seen.__setitem__("out", o))

    logits(model, ids, mask)
    out_zero, x0 = seen["out"], seen["x"]
    with torch.no_grad():
        nn.init.normal_(layer.adapter_ffn.up.weight)
        nn.init.normal_(layer.adapter_ffn.up.bias)
    logits(model, ids, mask)
    x = seen["x"]
    # Layer 0's FFN sees the same input both times: the changed adapter comes after it.
    assert torch.equal(x, x0)
    with torch.no_grad():
        expected_delta = 2.0 * layer.adapter_ffn.up(layer.adapter_ffn.act(layer.adapter_ffn.down(x)))
    assert expected_delta.abs().max() > 1e-3
    torch.testing.assert_close(seen["out"] - out_zero, expected_delta, atol=1e-5, rtol=0)
    # And the adapter reads the FFN input, not the FFN output: feeding it the output differs.
    with torch.no_grad():
        assert not torch.allclose(layer.adapter_ffn(out_zero), expected_delta, atol=1e-3)


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("arch", MODELS)
def test_training_lowers_loss_and_keeps_base_frozen(arch, style):
    build, task = MODELS[arch]
    model = apply_adapters(build(), AdapterMethod(style=style, reduction_factor=4), task)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    ids, mask = batch()
    labels = torch.tensor([0, 1, 2, 1]) if task == "classification" else ids

    def loss():
        return model(input_ids=ids, attention_mask=mask, labels=labels).loss

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    with torch.no_grad():
        start = loss().item()
    for _ in range(5):
        opt.zero_grad()
        loss().backward()
        opt.step()
    with torch.no_grad():
        end = loss().item()
    assert end < start
    for n, p in model.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, frozen[n]), n
    # Adapters did move, including the zero-initialised up projections.
    assert all(a.up.weight.any() for a in adapters_of(model).values())


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("arch", MODELS)
def test_save_load_roundtrip(tmp_path, arch, style):
    build, task = MODELS[arch]
    ids, mask = batch()
    model = apply_adapters(build(), AdapterMethod(style=style, reduction_factor=4, non_linearity="gelu"), task)
    torch.manual_seed(5)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    expected = logits(model, ids, mask)
    state = adapter_state_dict(model)
    assert set(state) == trainable(model)
    assert all(not t.requires_grad for t in state.values())

    save_adapters(model, tmp_path)
    meta = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert meta["task"] == task and meta["config"]["style"] == style
    assert set(meta["names"]) == set(load_file(str(tmp_path / WEIGHTS_FILE)))

    fresh = build()
    assert not torch.equal(logits(fresh, ids, mask), expected)
    loaded = load_adapters(fresh, tmp_path)
    assert loaded is fresh and is_adapter_model(fresh)
    assert fresh.tunesmith_adapter_config == model.tunesmith_adapter_config
    assert torch.equal(logits(fresh, ids, mask), expected)
    assert trainable(fresh) == trainable(model)


def test_load_mismatches_raise_model_error(tmp_path):
    model = apply_adapters(bert(), AdapterMethod(style="houlsby", reduction_factor=4), "classification")
    save_adapters(model, tmp_path / "a")

    # A model already carrying adapters of another width.
    other = apply_adapters(bert(), AdapterMethod(style="houlsby", reduction_factor=8), "classification")
    with pytest.raises(ModelError, match="wrong shape"):
        load_adapters(other, tmp_path / "a")

    # A different style: the checkpoint has attention adapters the model lacks.
    pfeiffer = apply_adapters(bert(), AdapterMethod(style="pfeiffer", reduction_factor=4), "classification")
    with pytest.raises(ModelError, match="unexpected"):
        load_adapters(pfeiffer, tmp_path / "a")

    # A checkpoint with a tensor removed.
    state = load_file(str(tmp_path / "a" / WEIGHTS_FILE))
    dropped = sorted(k for k in state if "adapter_ffn" in k)[0]
    del state[dropped]
    (tmp_path / "b").mkdir()
    save_file(state, str(tmp_path / "b" / WEIGHTS_FILE))
    (tmp_path / "b" / CONFIG_FILE).write_text((tmp_path / "a" / CONFIG_FILE).read_text())
    with pytest.raises(ModelError, match="missing") as err:
        load_adapters(bert(), tmp_path / "b")
    assert dropped in str(err.value)

    with pytest.raises(ModelError):
        load_adapters(bert(), tmp_path / "nowhere")


def test_deepcopy_keeps_hooks_on_own_adapters():
    ids, mask = batch()
    for style in STYLES:
        model = apply_adapters(bert(), AdapterMethod(style=style, reduction_factor=4), "classification")
        twin = copy.deepcopy(model)
        with torch.no_grad():
            for a in adapters_of(twin).values():
                nn.init.normal_(a.up.weight)
        assert not torch.equal(logits(twin, ids, mask), logits(model, ids, mask))
        assert torch.equal(logits(model, ids, mask), logits(bert(), ids, mask))


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.self_attn = nn.Module()
        self.self_attn.out_proj = nn.Linear(8, 8)
        self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 8)

    def forward(self, x):
        x = x + self.self_attn.out_proj(x)
        return x + self.fc2(torch.relu(self.fc1(x)))


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([_Block(), _Block(), _Block()])
        self.classifier = nn.Linear(8, 2)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return self.classifier(x)


@pytest.mark.parametrize("style", STYLES)
def test_generic_fallback_by_module_names(style):
    torch.manual_seed(0)
    model = _Toy()
    x = torch.randn(2, 8)
    expected = model(x).detach()
    apply_adapters(model, AdapterMethod(style=style, reduction_factor=2), "classification")
    assert torch.equal(model(x), expected)
    assert len(adapters_of(model)) == 3 * ADAPTERS_PER_BLOCK[style]
    assert all(a.bottleneck == 4 for a in adapters_of(model).values())
    assert {n.split(".")[0] for n in trainable(model)} == {"layers", "classifier"}
    if style == "parallel":
        block = model.layers[0]
        with torch.no_grad():
            nn.init.normal_(block.adapter_ffn.up.weight)
            lin = nn.functional.linear  # bypass the hooked modules to recompute by hand
            h = x + lin(x, block.self_attn.out_proj.weight, block.self_attn.out_proj.bias)
            ffn = lin(torch.relu(lin(h, block.fc1.weight, block.fc1.bias)), block.fc2.weight, block.fc2.bias)
            want = h + ffn + block.adapter_ffn(h)
            torch.testing.assert_close(block(x), want, atol=1e-6, rtol=0)


def test_unsupported_models_raise_config_error():
    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(4, 4)

    with pytest.raises(ConfigError, match="Plain") as err:
        apply_adapters(Plain(), AdapterMethod(), "classification")
    assert "lora" in str(err.value)

    class NoAttn(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList([nn.Sequential(nn.Linear(4, 4)) for _ in range(2)])

    model = NoAttn()
    with pytest.raises(ConfigError, match="NoAttn"):
        apply_adapters(model, AdapterMethod(style="houlsby"), "classification")
    # Nothing was changed by the failed attempt.
    assert all(p.requires_grad for p in model.parameters()) and not is_adapter_model(model)


def test_accepts_builder_context():
    # apply_method passes context such as total_steps to every builder.
    model = apply_adapters(bert(), AdapterMethod(style="pfeiffer"), "classification", total_steps=10)
    assert len(adapters_of(model)) == 2


def test_apply_twice_and_bad_task_raise():
    model = apply_adapters(bert(), AdapterMethod(), "classification")
    with pytest.raises(ConfigError, match="already"):
        apply_adapters(model, AdapterMethod(), "classification")
    with pytest.raises(ConfigError, match="task"):
        apply_adapters(bert(), AdapterMethod(), "seq2seq")
