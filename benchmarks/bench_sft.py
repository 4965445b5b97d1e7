"""Chat SFT, side by side: TRL's SFTTrainer with its defaults (the anchor) vs Tunesmith.

builtin:smollm2-135m + LoRA (r=16, alpha=32, dropout=0.05 on every projection) on a chat
mix: all 40 identity chats + chatterbot-en chats (seed 42), a held-out set drawn from both,
one epoch, batch 8, lr 1e-3 with cosine decay and 10% warmup, max_length 256, loss on
the last answer (TRL: a conversational prompt/completion dataset, whose default is
completion-only loss; Tunesmith: ``loss_on: last_answer``), the same system prompt.
Everything else is each system's default: for TRL that includes gradient checkpointing
and bf16 autocast, no packing, no padding-free batching.

Reported per run: non-padding training tokens/s and samples/s, wall time of the whole
job, peak RSS, and the eval loss (mean over answer tokens) of the trained model on the
same held-out chats, computed by one function for both systems (fp32).

Usage:
  python benchmarks/bench_sft.py [--reps 3] [--train 320] [--eval 40]
  python benchmarks/bench_sft.py --lever nopack:data.packing=false --anchor-set gradient_checkpointing=false
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

STARTED = time.perf_counter()
sys.path.insert(0, str(Path(__file__).parent))
import harness  # noqa: E402

SYSTEM = "You are a helpful AI assistant."
HYPER = {"r": 16, "alpha": 32, "dropout": 0.05, "epochs": 1, "batch_size": 8, "lr": 1e-3, "warmup_ratio": 0.1,
         "max_length": 256, "seed": 42}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
KEYS = ["tokens_per_s", "samples_per_s", "train_s", "wall_s", "peak_rss_mb", "eval_loss"]


def prepare(data_dir: Path, n_train: int, n_eval: int) -> None:
    """train.jsonl / eval.jsonl of {"messages"} chats, identity and general chat shuffled together."""
    from tunesmith.data.sources import load_records
    from tunesmith.jsonl import write_jsonl

    rng = random.Random(HYPER["seed"])
    identity = [{"messages": r["messages"]} for r in load_records("builtin:identity", "chat")]
    general = [{"messages": r["messages"]} for r in load_records("builtin:chatterbot-en", "chat")]
    rng.shuffle(identity)
    rng.shuffle(general)
    n_id_eval = max(1, round(n_eval * 0.1))
    ev = identity[:n_id_eval] + general[: n_eval - n_id_eval]
    train = identity[n_id_eval:][:n_train]
    train += general[n_eval - n_id_eval :][: max(0, n_train - len(train))]
    rng.shuffle(train)
    write_jsonl(data_dir / "train.jsonl", train)
    write_jsonl(data_dir / "eval.jsonl", ev)


def read(path: Path) -> list[dict]:
    from tunesmith.jsonl import read_jsonl

    return list(read_jsonl(path))


def to_prompt_completion(row: dict) -> dict:
    """A chat as TRL's conversational prompt/completion row (completion-only loss by default)."""
    messages = [{"role": "system", "content": SYSTEM}, *row["messages"]]
    return {"prompt": messages[:-1], "completion": messages[-1:]}


def held_out_loss(model, tokenizer, data_dir: Path) -> float:
    """Mean loss over the last answer's tokens of the held-out chats (one function for both systems)."""
    import torch

    from tunesmith.eval.evaluate import evaluate
    from tunesmith.objectives.causal_lm import CausalLMObjective

    objective = CausalLMObjective(tokenizer, HYPER["max_length"], SYSTEM, last_turn_only=True)
    features = objective.encode(read(data_dir / "eval.jsonl"))
    model.float()
    return evaluate(objective, model, features, 8, torch.device("cpu"), ("eval_loss",))["eval_loss"]


def worker_trl(data_dir: Path, out_dir: Path, overrides: list[str]) -> dict:
    """TRL's SFTTrainer with a PEFT LoraConfig; only the shared hyperparameters are set."""
    import yaml
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers import set_seed
    from trl import SFTConfig, SFTTrainer

    from tunesmith.models.load import resolve_model_source

    set_seed(HYPER["seed"])  # SFTTrainer wraps the model with LoRA before Trainer seeds anything
    source = resolve_model_source("builtin:smollm2-135m")
    tokenizer = AutoTokenizer.from_pretrained(source)

    train = Dataset.from_list([to_prompt_completion(r) for r in read(data_dir / "train.jsonl")])
    settings = dict(output_dir=str(out_dir), per_device_train_batch_size=HYPER["batch_size"],
                    num_train_epochs=HYPER["epochs"], learning_rate=HYPER["lr"], lr_scheduler_type="cosine",
                    warmup_steps=HYPER["warmup_ratio"], max_length=HYPER["max_length"], seed=HYPER["seed"],
                    report_to="none", save_strategy="no", use_cpu=True, disable_tqdm=True)
    for item in overrides:  # e.g. gradient_checkpointing=false (values parsed as YAML)
        key, _, value = item.partition("=")
        settings[key] = yaml.safe_load(value)
    model = AutoModelForCausalLM.from_pretrained(source)
    trainer = SFTTrainer(model=model, args=SFTConfig(**settings), train_dataset=train, processing_class=tokenizer,
                         peft_config=LoraConfig(r=HYPER["r"], lora_alpha=HYPER["alpha"], lora_dropout=HYPER["dropout"],
                                                target_modules=TARGETS, task_type="CAUSAL_LM"))
    result = trainer.train()
    trainer.save_model(str(out_dir / "final"))
    wall = time.perf_counter() - STARTED
    seen = trainer.train_dataset
    tokens = sum(sum(mask) for mask in seen["attention_mask"]) if "attention_mask" in seen.column_names else \
        sum(len(ids) for ids in seen["input_ids"])
    runtime = result.metrics["train_runtime"]
    return {"tokens_per_s": tokens * HYPER["epochs"] / runtime, "samples_per_s": result.metrics["train_samples_per_second"],
            "train_s": runtime, "wall_s": wall, "peak_rss_mb": harness.peak_rss_mb(),
            "eval_loss": held_out_loss(trainer.model, tokenizer, data_dir)}


def recipe(data_dir: Path) -> dict:
    return {
        "name": "bench-sft", "task": "causal_lm", "seed": HYPER["seed"],
        "model": {"name": "builtin:smollm2-135m"},
        "data": {"train": str(data_dir / "train.jsonl"), "eval": str(data_dir / "eval.jsonl"),
                 "max_length": HYPER["max_length"], "system_prompt": SYSTEM, "loss_on": "last_answer", "cache": False},
        "method": {"type": "lora", "r": HYPER["r"], "alpha": HYPER["alpha"], "dropout": HYPER["dropout"],
                   "target_modules": TARGETS},
        "train": {"epochs": HYPER["epochs"], "batch_size": HYPER["batch_size"], "lr": HYPER["lr"],
                  "warmup_ratio": HYPER["warmup_ratio"], "scheduler": "cosine", "eval_batch_size": 8},
    }


def worker_tunesmith(data_dir: Path, out_dir: Path, overrides: list[str]) -> dict:
    from tunesmith.config.load import apply_overrides, validate_recipe
    from tunesmith.methods.saved import load_trained
    from tunesmith.runner import run_recipe

    config = validate_recipe(apply_overrides(recipe(data_dir), overrides))
    summary = run_recipe(config, output_dir=out_dir / "run", show_progress=False, log=lambda *a: None)
    wall = time.perf_counter() - STARTED  # the whole job; Tunesmith also scores the base model first
    train = summary["train"]
    model, tokenizer, _ = load_trained(out_dir / "run" / "final")
    return {"tokens_per_s": train["tokens_per_s"], "samples_per_s": train["samples_per_s"], "train_s": train["wall_s"],
            "wall_s": wall, "peak_rss_mb": harness.peak_rss_mb(),
            "eval_loss": held_out_loss(model, tokenizer, data_dir)}


def main() -> None:
    harness.side_by_side(__file__, __doc__, "trl", {"trl": worker_trl, "tunesmith": worker_tunesmith}, prepare,
                         KEYS, HYPER, train_rows=320, eval_rows=40)


if __name__ == "__main__":
    main()
