"""Shared fixtures: tiny random models built from a config (no network) and synthetic data.

The tiny models reuse the packaged MiniLM tokenizer, so tokenization is real while the
models are small enough (hidden 32, 2 layers) to train in seconds on a CPU. They and the
tiny recipes are written by ``tunesmith.testing``, which the benchmarks share.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tunesmith.jsonl import write_jsonl  # noqa: F401 (re-exported for tests)
from tunesmith.synthetic import chat_rows, make_lora_run, sentiment_rows  # noqa: F401 (re-exported for tests)
from tunesmith.testing import (  # noqa: F401 (CHATML re-exported for tests)
    CHATML,
    write_chat_recipe,
    write_cls_recipe,
    write_tiny_bert,
    write_tiny_llama,
)

os.environ.setdefault("TUNESMITH_NO_PROGRESS", "1")
# train.precision: auto means fp32 in tests whatever the CPU, so exact comparisons do not
# depend on the machine; tests of auto itself clear it (tests/unit/test_auto_settings.py).
os.environ["TUNESMITH_NO_BF16"] = "1"


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


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A 2-layer, hidden-32 BERT saved as a normal HF folder (base model for classification)."""
    return write_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    """A 2-layer, hidden-32 Llama with a ChatML template (base model for chat SFT)."""
    return write_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture()
def cls_recipe(tmp_path, tiny_bert_dir) -> Path:
    """A classification recipe on the tiny BERT and synthetic sentiment data."""
    return write_cls_recipe(tmp_path, tiny_bert_dir)


@pytest.fixture()
def chat_recipe(tmp_path, tiny_llama_dir) -> Path:
    """A chat-SFT recipe on the tiny Llama and synthetic identity chats."""
    return write_chat_recipe(tmp_path, tiny_llama_dir)
