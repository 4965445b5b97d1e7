"""The demo job, side by side: HF Trainer + PEFT (the anchor) vs Tunesmith.

builtin:minilm + LoRA (r=8, alpha=16, dropout=0.1 on query/key/value, the head trained in
full) on builtin:rt-snippets: 2,000 training / 500 held-out sentences (exact duplicates
removed first, stratified split, seed 42), one epoch, batch 32, lr 2e-3, cosine with 6%
warmup, clipping at 1.0, max_length 64. Both systems read the same JSONL files; each run
is a fresh process, the order alternates.

Reported per run: train samples/s and non-padding tokens/s (training loop only), wall
time of the whole job from process start (imports, data preparation, model loading,
training, the final evaluation, saving; Tunesmith also evaluates the base model first and
writes its report), peak RSS, eval accuracy on the 500 sentences.

Usage:
  python benchmarks/bench_classification.py [--reps 3] [--train 2000]
  python benchmarks/bench_classification.py --lever nogroup:train.group_by_length=false
      (adds a Tunesmith variant with recipe overrides, to measure one lever alone)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

STARTED = time.perf_counter()
sys.path.insert(0, str(Path(__file__).parent))
import harness  # noqa: E402

LABELS = ["negative", "positive"]
HYPER = {"r": 8, "alpha": 16, "dropout": 0.1, "targets": ["query", "key", "value"], "epochs": 1,
         "batch_size": 32, "lr": 2e-3, "warmup_ratio": 0.06, "max_length": 64, "seed": 42}
KEYS = ["samples_per_s", "tokens_per_s", "train_s", "wall_s", "peak_rss_mb", "accuracy"]


def prepare(data_dir: Path, n_train: int, n_eval: int) -> None:
    """Write train.jsonl / eval.jsonl that both systems read."""
    from tunesmith.data.sources import load_records
    from tunesmith.data.split import subsample, train_eval_split
    from tunesmith.jsonl import write_jsonl

    seen, rows = set(), []
    for row in load_records("builtin:rt-snippets", "classification"):
        key = " ".join(row["text"].lower().split())
        if key not in seen:
            seen.add(key)
            rows.append({"text": row["text"], "label": row["label"]})
    train, ev = train_eval_split(rows, eval_size=n_eval, seed=HYPER["seed"], stratify_field="label")
    write_jsonl(data_dir / "train.jsonl", subsample(train, n_train, HYPER["seed"]))
    write_jsonl(data_dir / "eval.jsonl", ev)


def read(path: Path) -> list[dict]:
    from tunesmith.jsonl import read_jsonl

    return list(read_jsonl(path))


def hf_tokenizer(tokenizer):
    """The guides' batched ``datasets.map`` function: token ids and integer labels."""
    label2id = {label: i for i, label in enumerate(LABELS)}

    def tokenize(batch):
        enc = tokenizer(batch["text"], truncation=True, max_length=HYPER["max_length"])
        enc["labels"] = [label2id[label] for label in batch["label"]]
        return enc

    return tokenize


def worker_hf(data_dir: Path, out_dir: Path, overrides: list[str]) -> dict:
    """The guides' recipe: datasets.map tokenization, DataCollatorWithPadding, Trainer, PEFT."""
    import numpy as np
    import yaml
    from datasets import Dataset
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments, set_seed)

    from tunesmith.models.load import resolve_model_source

    set_seed(HYPER["seed"])
    source = resolve_model_source("builtin:minilm")
    tokenizer = AutoTokenizer.from_pretrained(source)
    label2id = {label: i for i, label in enumerate(LABELS)}
    tokenize = hf_tokenizer(tokenizer)
    train = Dataset.from_list(read(data_dir / "train.jsonl")).map(tokenize, batched=True, remove_columns=["text", "label"])
    ev = Dataset.from_list(read(data_dir / "eval.jsonl")).map(tokenize, batched=True, remove_columns=["text", "label"])
    model = AutoModelForSequenceClassification.from_pretrained(
        source, num_labels=2, id2label=dict(enumerate(LABELS)), label2id=label2id)
    model = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, r=HYPER["r"], lora_alpha=HYPER["alpha"],
                                             lora_dropout=HYPER["dropout"], target_modules=HYPER["targets"]))
    settings = dict(output_dir=str(out_dir), per_device_train_batch_size=HYPER["batch_size"],
                    per_device_eval_batch_size=64, num_train_epochs=HYPER["epochs"], learning_rate=HYPER["lr"],
                    lr_scheduler_type="cosine", warmup_steps=HYPER["warmup_ratio"], weight_decay=0.0,
                    max_grad_norm=1.0, seed=HYPER["seed"], report_to="none", save_strategy="no", eval_strategy="no",
                    logging_steps=10, use_cpu=True, disable_tqdm=True)
    for item in overrides:  # e.g. train_sampling_strategy=group_by_length (values parsed as YAML)
        key, _, value = item.partition("=")
        settings[key] = yaml.safe_load(value)
    trainer = Trainer(model=model, args=TrainingArguments(**settings), train_dataset=train,
                      data_collator=DataCollatorWithPadding(tokenizer))
    result = trainer.train()
    tokens = sum(len(ids) for ids in train["input_ids"]) * HYPER["epochs"]
    preds = trainer.predict(ev)
    accuracy = float((np.argmax(preds.predictions, -1) == preds.label_ids).mean())
    trainer.save_model(str(out_dir / "final"))
    wall = time.perf_counter() - STARTED
    return {"samples_per_s": result.metrics["train_samples_per_second"], "train_s": result.metrics["train_runtime"],
            "tokens_per_s": tokens / result.metrics["train_runtime"], "wall_s": wall,
            "peak_rss_mb": harness.peak_rss_mb(), "accuracy": accuracy}


def recipe(data_dir: Path) -> dict:
    return {
        "name": "bench-classification", "task": "classification", "seed": HYPER["seed"],
        "model": {"name": "builtin:minilm"},
        "data": {"train": str(data_dir / "train.jsonl"), "eval": str(data_dir / "eval.jsonl"),
                 "max_length": HYPER["max_length"], "cache": False},
        "method": {"type": "lora", "r": HYPER["r"], "alpha": HYPER["alpha"], "dropout": HYPER["dropout"],
                   "target_modules": HYPER["targets"]},
        "train": {"epochs": HYPER["epochs"], "batch_size": HYPER["batch_size"], "lr": HYPER["lr"],
                  "warmup_ratio": HYPER["warmup_ratio"], "scheduler": "cosine", "max_grad_norm": 1.0},
    }


def worker_tunesmith(data_dir: Path, out_dir: Path, overrides: list[str]) -> dict:
    from tunesmith.config.load import apply_overrides, validate_recipe
    from tunesmith.runner import run_recipe

    config = validate_recipe(apply_overrides(recipe(data_dir), overrides))
    summary = run_recipe(config, output_dir=out_dir / "run", show_progress=False, log=lambda *a: None)
    train = summary["train"]
    return {"samples_per_s": train["samples_per_s"], "tokens_per_s": train["tokens_per_s"], "train_s": train["wall_s"],
            # The whole job; Tunesmith also evaluates the base model first and writes a report.
            "wall_s": time.perf_counter() - STARTED,
            "peak_rss_mb": harness.peak_rss_mb(), "accuracy": summary["eval_after"]["accuracy"]}


def main() -> None:
    harness.side_by_side(__file__, __doc__, "hf", {"hf": worker_hf, "tunesmith": worker_tunesmith}, prepare,
                         KEYS, HYPER, train_rows=2000, eval_rows=500)


if __name__ == "__main__":
    main()
