"""The training loop: accumulation-invariant updates, schedule length, logging contract."""

from __future__ import annotations

import json

import pytest
import torch
from accelerate import Accelerator
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, LlamaConfig, LlamaForCausalLM

from tests.conftest import CHATML, chat_rows, sentiment_rows
from tunesmith.config.schema import TrainConfig
from tunesmith.models.load import resolve_model_source
from tunesmith.objectives.causal_lm import CausalLMObjective
from tunesmith.objectives.classification import ClassificationObjective
from tunesmith.train.backend import Backend
from tunesmith.train.loop import train
from tunesmith.train.sampler import epoch_windows, steps_per_epoch


@pytest.fixture(scope="module")
def tokenizer():
    tok = AutoTokenizer.from_pretrained(resolve_model_source("builtin:minilm"))
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = CHATML
    return tok


def _bert(tokenizer):
    torch.manual_seed(0)
    # No dropout: the two runs must see identical forward passes.
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=2)
    return BertForSequenceClassification(config)


def _llama(tokenizer):
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=64, pad_token_id=tokenizer.pad_token_id)
    return LlamaForCausalLM(config)


def _run(model, objective, features, tmp_path, **cfg):
    cfg = TrainConfig(**{"epochs": 1, "lr": 1e-2, "warmup_ratio": 0.0, "log_every": 1, **cfg})
    train(model, objective, features, cfg, lr=cfg.lr, seed=3, run_dir=tmp_path, backend=Backend(Accelerator(cpu=True)),
          show_progress=False)
    return [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("task", ["classification", "causal_lm"])
def test_batch8_accum1_equals_batch2_accum4(tmp_path, tokenizer, task):
    if task == "classification":
        objective = ClassificationObjective(tokenizer, ["negative", "positive"], 32)
        features = objective.encode(sentiment_rows(32, seed=0))
        build = _bert
    else:
        objective = CausalLMObjective(tokenizer, 48)
        # Chats of different lengths so micro-batches hold different numbers of answer tokens.
        rows = chat_rows(32)
        for i, row in enumerate(rows):
            row["messages"][1]["content"] += " ok" * (i % 5)
        features = objective.encode(rows)
        build = _llama
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    model_a, model_b = build(tokenizer), build(tokenizer)
    # Without length grouping both runs see the same examples in each optimizer step.
    log_a = _run(model_a, objective, features, tmp_path / "a", batch_size=8, grad_accum=1, group_by_length=False)
    log_b = _run(model_b, objective, features, tmp_path / "b", batch_size=2, grad_accum=4, group_by_length=False)
    assert len(log_a) == len(log_b) == 4
    for a, b in zip(log_a, log_b):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
    for (name, pa), (_, pb) in zip(model_a.named_parameters(), model_b.named_parameters()):
        torch.testing.assert_close(pa, pb, atol=1e-5, rtol=1e-4, msg=name)
    assert log_a[-1]["loss"] < log_a[0]["loss"]


def test_epoch_windows_cover_every_example_once_and_depend_on_seed_and_epoch():
    windows = epoch_windows(10, 3, 2, seed=1, epoch=0)
    flat = [i for window in windows for batch in window for i in batch]
    assert sorted(flat) == list(range(10))
    assert [len(w) for w in windows] == [2, 2]  # 4 micro-batches (3,3,3,1) in 2 steps
    assert steps_per_epoch(10, 3, 2) == 2
    assert windows == epoch_windows(10, 3, 2, seed=1, epoch=0)
    assert windows != epoch_windows(10, 3, 2, seed=1, epoch=1)
    assert windows != epoch_windows(10, 3, 2, seed=2, epoch=0)


def test_length_grouping_keeps_every_example_and_reduces_padding():
    lengths = [5 + (i * 37) % 60 for i in range(512)]
    grouped = epoch_windows(512, 8, 1, seed=0, epoch=0, lengths=lengths)
    plain = epoch_windows(512, 8, 1, seed=0, epoch=0)
    assert sorted(i for w in grouped for b in w for i in b) == list(range(512))

    def padded(windows):
        return sum(len(b) * max(lengths[i] for i in b) for w in windows for b in w)

    assert padded(grouped) < 0.7 * padded(plain)
    assert grouped != epoch_windows(512, 8, 1, seed=0, epoch=1, lengths=lengths)


def test_max_steps_overrides_epochs_and_lr_follows_the_schedule(tmp_path, tokenizer):
    objective = ClassificationObjective(tokenizer, ["negative", "positive"], 32)
    features = objective.encode(sentiment_rows(16, seed=0))
    log = _run(_bert(tokenizer), objective, features, tmp_path, batch_size=4, max_steps=10, warmup_ratio=0.2,
               scheduler="linear", epochs=100)
    assert [m["step"] for m in log] == list(range(1, 11))
    lrs = [m["lr"] for m in log]
    assert lrs[1] == pytest.approx(1e-2)  # end of the 2 warmup steps
    assert lrs[-1] == pytest.approx(0.0)
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:]))
    assert log[-1]["epoch"] == pytest.approx(2.5)


def test_compiled_training_takes_the_same_steps(tmp_path, tokenizer):
    objective = ClassificationObjective(tokenizer, ["negative", "positive"], 32)
    features = objective.encode(sentiment_rows(16, seed=0))
    (tmp_path / "plain").mkdir()
    (tmp_path / "compiled").mkdir()
    plain = _run(_bert(tokenizer), objective, features, tmp_path / "plain", batch_size=8)
    compiled = _run(_bert(tokenizer), objective, features, tmp_path / "compiled", batch_size=8, compile=True)
    assert [r["loss"] for r in compiled] == pytest.approx([r["loss"] for r in plain], rel=1e-4)
