"""Shared fixtures: tiny random models built from a config (no network) and synthetic data.

The tiny models reuse the packaged MiniLM tokenizer, so tokenization is real while the
models are small enough (hidden 32, 2 layers) to train in seconds on a CPU.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml

from tunesmith.synthetic import chat_rows, make_lora_run, sentiment_rows, write_jsonl  # noqa: F401 (re-exported for tests)

os.environ.setdefault("TUNESMITH_NO_PROGRESS", "1")


@pytest.fixture(autouse=True, scope="session")
def _private_data_cache(tmp_path_factory):
    """Tokenized-data caches of one test session stay in it: a cache hit left by an earlier
    session would skip the code a test means to exercise."""
    os.environ["TUNESMITH_DATA_CACHE"] = str(tmp_path_factory.mktemp("data-cache"))


def copy_as_crashed_after(reference: Path, run: Path, step: int) -> Path:
    """Copy a finished run directory as if the run had died right after checkpoint ``step``:
    later checkpoints and final/ are gone, so ``--resume`` continues from ``step``."""
    import shutil

    from tunesmith.train.checkpoint import list_checkpoints

    shutil.copytree(reference, run)
    for ckpt in list_checkpoints(run):
        if int(ckpt.name[5:]) > step:
            shutil.rmtree(ckpt)
    shutil.rmtree(run / "final")
    return run

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _base_tokenizer():
    from transformers import AutoTokenizer

    from tunesmith.models.load import resolve_model_source

    return AutoTokenizer.from_pretrained(resolve_model_source("builtin:minilm"))


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A 2-layer, hidden-32 BERT saved as a normal HF folder (base model for classification)."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    tokenizer = _base_tokenizer()
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=128,
                        # A larger init spread gives the random encoder token-dependent features,
                        # so frozen-base methods (LoRA, freeze) have a signal to learn from.
                        initializer_range=0.2)
    out = tmp_path_factory.mktemp("tiny-bert")
    BertModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    """A 2-layer, hidden-32 Llama with a ChatML template (base model for chat SFT)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tokenizer = _base_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.chat_template = CHATML
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=64, max_position_embeddings=256,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         tie_word_embeddings=True,
                         # Embeddings wide enough that a frozen tied LM head can separate tokens.
                         initializer_range=0.3)
    out = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture()
def cls_recipe(tmp_path, tiny_bert_dir) -> Path:
    """A classification recipe on the tiny BERT and synthetic sentiment data."""
    write_jsonl(tmp_path / "train.jsonl", sentiment_rows(160, seed=1))
    write_jsonl(tmp_path / "eval.jsonl", sentiment_rows(40, seed=2))
    recipe = {
        "name": "tiny-cls",
        "task": "classification",
        "seed": 7,
        "output_dir": str(tmp_path / "runs"),
        "model": {"name": str(tiny_bert_dir)},
        "data": {"train": "train.jsonl", "eval": "eval.jsonl", "max_length": 32},
        "method": {"type": "full"},
        "train": {"epochs": 15, "batch_size": 16, "lr": 5e-3, "eval_every": 10, "log_every": 2, "save_every": 20},
        "eval": {"probes": ["the film was wonderful", "the plot was awful"]},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture()
def chat_recipe(tmp_path, tiny_llama_dir) -> Path:
    """A chat-SFT recipe on the tiny Llama and synthetic identity chats."""
    write_jsonl(tmp_path / "chats.jsonl", chat_rows(60))
    recipe = {
        "name": "tiny-chat",
        "task": "causal_lm",
        "seed": 7,
        "output_dir": str(tmp_path / "runs"),
        "model": {"name": str(tiny_llama_dir)},
        "data": {"train": "chats.jsonl", "eval_size": 10, "max_length": 64, "system_prompt": "be brief."},
        "method": {"type": "lora", "r": 8, "alpha": 16, "dropout": 0.0},
        "train": {"epochs": 6, "batch_size": 8, "lr": 2e-2, "log_every": 2},
        "eval": {"probes": ["who are you?"], "max_new_tokens": 8},
    }
    path = tmp_path / "chat.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path

