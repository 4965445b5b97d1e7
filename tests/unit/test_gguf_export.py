"""GGUF export: llama.cpp's layout, logits equal after transformers loads the file back,
tokenizer metadata carried, an Ollama Modelfile whose template renders like training."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import write_jsonl
from tunesmith.errors import ConfigError, ModelError
from tunesmith.export import export_run
from tunesmith.export.llama_cpp_gate import llama_cpp_available
from tunesmith.export.modelfile import matching_family
from tunesmith.synthetic import make_lora_run


@pytest.fixture(scope="module")
def smollm_tokenizer():
    from transformers import AutoTokenizer

    from tunesmith.models.load import resolve_model_source

    return AutoTokenizer.from_pretrained(resolve_model_source("builtin:smollm2-135m"))


@pytest.fixture(scope="module")
def gguf_run(tmp_path_factory, smollm_tokenizer):
    """A LoRA run on a tiny random Llama (grouped-query attention, tied embeddings) with
    SmolLM2's byte-level BPE tokenizer and ChatML template."""
    from transformers import LlamaConfig, LlamaForCausalLM

    base = tmp_path_factory.mktemp("bpe-llama")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(smollm_tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=64, max_position_embeddings=256,
                         tie_word_embeddings=True,
                         bos_token_id=smollm_tokenizer.bos_token_id, eos_token_id=smollm_tokenizer.eos_token_id)
    LlamaForCausalLM(config).save_pretrained(base)
    smollm_tokenizer.save_pretrained(base)
    run = make_lora_run(tmp_path_factory.mktemp("gguf") / "run", base, "causal_lm", seed=3, system_prompt="Be brief.")
    write_jsonl(run / "eval_set.jsonl", [
        {"messages": [{"role": "user", "content": f"What is {i} + {i}?"}, {"role": "assistant", "content": f"{2 * i}."}]}
        for i in range(8)])
    (run / "summary.json").write_text("{}")
    return run


def test_f16_gguf_reloads_to_the_merged_logits_with_tokenizer_and_template(gguf_run, tmp_path, smollm_tokenizer):
    from gguf import GGUFReader
    from transformers import AutoModelForCausalLM

    from tunesmith.export.merge import merged_model

    out = tmp_path / "f16"
    report = export_run(gguf_run, "gguf", out, quant="f16")
    merge_check, check, engine = report["checks"]
    if not llama_cpp_available():
        assert engine["passed"] and "llama-cpp-python is not installed" in engine["skipped"]
    assert merge_check["passed"] and check["passed"] and check["probes"] >= 8
    assert check["max_abs_diff"] <= check["tolerance"] and check["greedy_next_token_agreement"] > 0.99

    # Independently: transformers reads the file back to the merged model's logits.
    merged, tokenizer, _, _ = merged_model(gguf_run / "final", gguf_run)
    loaded = AutoModelForCausalLM.from_pretrained(str(out), gguf_file="model-f16.gguf", dtype=torch.float32)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "Who are you?"}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        expected, got = merged(input_ids=ids).logits, loaded(input_ids=ids).logits
    assert (expected - got).abs().max() < 2e-2 * max(1.0, float(expected.abs().max()))
    assert (expected - got).abs().max() > 0  # f16 really rounded: the check is not comparing a model to itself

    fields = GGUFReader(str(out / "model-f16.gguf")).fields
    assert fields["general.architecture"].contents() == "llama"
    # The packaged SmolLM2 tokenizer, as transformers rebuilds it from its GGUF, splits text as GPT-2 does
    assert fields["tokenizer.ggml.pre"].contents() == "gpt-2"
    assert fields["tokenizer.chat_template"].contents() == smollm_tokenizer.chat_template
    assert fields["tokenizer.ggml.tokens"].contents()[:3] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    assert fields["tokenizer.ggml.token_type"].contents()[:3] == [3, 3, 3]  # control tokens
    assert fields["tokenizer.ggml.eos_token_id"].contents() == smollm_tokenizer.eos_token_id

    modelfile = (out / "Modelfile").read_text()
    assert modelfile.startswith("FROM ./model-f16.gguf\n")
    assert 'SYSTEM """Be brief."""' in modelfile and 'PARAMETER stop "<|im_end|>"' in modelfile
    assert "<|im_start|>{{ .Role }}" in modelfile
    saved = json.loads((out / "export.json").read_text())
    assert saved["ollama"]["template"] == "chatml" and saved["quant"] == "f16"


def test_q8_0_is_smaller_and_within_its_own_tolerance(gguf_run, tmp_path, monkeypatch):
    import tunesmith.export.llama_cpp_gate as gate

    monkeypatch.setattr(gate, "llama_cpp_available", lambda: False)  # transformers' gate only (see the README)
    f16 = export_run(gguf_run, "gguf", tmp_path / "f16")
    q8 = export_run(gguf_run, "gguf", tmp_path / "q8", quant="q8_0")
    assert q8["checks"][1]["passed"]
    assert q8["checks"][1]["max_abs_diff"] > f16["checks"][1]["max_abs_diff"]  # 8 bits lose more than 16
    assert q8["files"]["model-q8_0.gguf"] < f16["files"]["model-f16.gguf"]


def test_a_template_no_ollama_family_renders_is_named_at_its_first_differing_token(smollm_tokenizer):
    import copy

    wrong = copy.deepcopy(smollm_tokenizer)
    wrong.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}: {{ m['content'] }}<|im_end|>\n"
                           "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    with pytest.raises(ModelError, match=r"token 2 \(':' in training, 'Ċ' in the template\)"):
        matching_family(wrong, None)
    assert matching_family(smollm_tokenizer, "Be brief.").name == "chatml"


@pytest.mark.skipif(not llama_cpp_available(), reason="llama-cpp-python (optional extra) is not installed")
def test_llama_cpp_runs_the_file_to_pytorchs_greedy_answers(gguf_run, tmp_path):
    engine = export_run(gguf_run, "gguf", tmp_path / "f16")["checks"][2]
    assert engine["passed"] and engine["probes"] >= 8
    assert engine["same_answers"] >= 0.75 and engine["same_tokenization"] == 1.0


def test_pre_tokenizer_names_follow_llama_cpp():
    from tokenizers import Tokenizer, models, pre_tokenizers

    from tunesmith.export.gguf_export import pre_tokenizer_name

    def named(pre) -> str:
        backend = Tokenizer(models.BPE())
        backend.pre_tokenizer = pre
        return pre_tokenizer_name(backend)

    assert named(pre_tokenizers.ByteLevel()) == "gpt-2"
    assert named(pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                          pre_tokenizers.ByteLevel()])) == "smollm"
    assert named(pre_tokenizers.Whitespace()) == "default"


def test_a_classifier_is_refused(tmp_path, tiny_bert_dir):
    run = make_lora_run(tmp_path / "cls", tiny_bert_dir, "classification", seed=1, labels=["a", "b"])
    with pytest.raises(ConfigError, match="Llama-family causal language models"):
        export_run(run, "gguf", tmp_path / "out")
