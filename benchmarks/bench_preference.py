"""DPO, side by side: TRL's DPOTrainer (the anchor) vs Tunesmith's ``task: preference``.

Data: builtin:rt-review-ratings -- Rotten Tomatoes sentences rated -4..4 as answers to
"Write a one-sentence movie review." -- paired by rating (gap >= 3: chosen is a liked
review, rejected a disliked one), sentences of at most 30 words, shuffled with seed 42.
Model builtin:smollm2-135m + LoRA (r=16, alpha=32, dropout 0 on q/k/v/o), beta 0.1,
one epoch, batch 8, lr 5e-5 (linear decay, no warmup), max_length 128, both as
conversational prompt/chosen/rejected rows through SmolLM2's chat template, both in bf16
autocast (TRL's default on a CPU; Tunesmith's default is fp32: ``--lever fp32:train.precision=fp32``).
Everything else is each system's default (TRL: gradient checkpointing on, dropout
disabled; Tunesmith: padding-free batches).

First, the formula check: both systems compute the loss of one batch of 8 pairs on the
same LoRA model whose adapter weights are random (not zero, so policy and reference
differ), for DPO (TRL ``sigmoid``) and IPO; the difference must be below 1e-4.

Reported per run: training tokens/s (prompt+chosen and prompt+rejected tokens of every
pair, counted once by one function for both), wall time, peak RSS, and the held-out
preference accuracy and DPO loss of the trained adapter on the same pairs, computed by
one function for both (implicit rewards against the base model). ``tunesmith[precompute]``
is Tunesmith with ``preference.precompute_reference: true``; ``tunesmith[gc4]`` checkpoints
every 4th block (``train.gradient_checkpointing_every_n_layers: 4``).

Usage:
  python benchmarks/bench_preference.py [--reps 3] [--train 256] [--eval 64]
  python benchmarks/bench_preference.py --anchor-set precompute_ref_log_probs=true
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from pathlib import Path

STARTED = time.perf_counter()
sys.path.insert(0, str(Path(__file__).parent))
import harness  # noqa: E402

HYPER = {"r": 16, "alpha": 32, "dropout": 0.0, "epochs": 1, "batch_size": 8, "lr": 5e-5, "beta": 0.1,
         "max_length": 128, "seed": 42, "min_gap": 3.0}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
KEYS = ["tokens_per_s", "train_s", "wall_s", "peak_rss_mb", "accuracy", "eval_loss"]
MODEL = "builtin:smollm2-135m"


def prepare(data_dir: Path, n_train: int, n_eval: int) -> None:
    """train.jsonl / eval.jsonl of conversational prompt/chosen/rejected pairs."""
    from tunesmith.data.builtins import load_rt_review_ratings
    from tunesmith.data.preference_rows import pairs_from_ratings
    from tunesmith.jsonl import write_jsonl

    rated = [r for r in load_rt_review_ratings() if len(r["response"].split()) <= 30]
    pairs = pairs_from_ratings(rated, HYPER["min_gap"])
    random.Random(HYPER["seed"]).shuffle(pairs)
    rows = [{"prompt": [{"role": "user", "content": p["prompt"]}],
             "chosen": [{"role": "assistant", "content": p["chosen"]}],
             "rejected": [{"role": "assistant", "content": p["rejected"]}]} for p in pairs[: n_train + n_eval]]
    write_jsonl(data_dir / "train.jsonl", rows[:n_train])
    write_jsonl(data_dir / "eval.jsonl", rows[n_train:])


def read(path: Path) -> list[dict]:
    from tunesmith.jsonl import read_jsonl

    return list(read_jsonl(path))


def _objective(loss: str = "dpo"):
    from transformers import AutoTokenizer

    from tunesmith.config.schema import PreferenceConfig
    from tunesmith.models.load import resolve_model_source
    from tunesmith.objectives.preference import PreferenceObjective

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_source(MODEL))
    # padding_free as the recipe trains: one row, each prompt once (the formula check's path too).
    return PreferenceObjective(tokenizer, HYPER["max_length"], PreferenceConfig(loss=loss, beta=HYPER["beta"]),
                               padding_free=True)


def training_tokens(data_dir: Path) -> int:
    """Tokens one epoch pushes through the policy: prompt+chosen and prompt+rejected per pair."""
    features = _objective().encode(read(data_dir / "train.jsonl"))
    return sum(2 * len(f["prompt"]) + len(f["chosen"]) + len(f["rejected"]) for f in features)


def held_out(final_dir: Path, data_dir: Path) -> dict:
    """Preference accuracy and DPO loss of a trained adapter on the held-out pairs (one function for both)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tunesmith.eval.evaluate import evaluate
    from tunesmith.models.load import resolve_model_source

    objective = _objective()
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(resolve_model_source(MODEL)), final_dir)
    features = objective.encode(read(data_dir / "eval.jsonl"))
    scores = evaluate(objective, model, features, 8, torch.device("cpu"), ("pairwise_accuracy", "eval_loss"))
    return {"accuracy": scores["pairwise_accuracy"], "eval_loss": scores["eval_loss"]}


def _dpo_config(out_dir: Path, **extra):
    from trl import DPOConfig

    return DPOConfig(output_dir=str(out_dir), per_device_train_batch_size=HYPER["batch_size"],
                     num_train_epochs=HYPER["epochs"], learning_rate=HYPER["lr"], lr_scheduler_type="linear",
                     beta=HYPER["beta"], max_length=HYPER["max_length"], seed=HYPER["seed"], report_to="none",
                     save_strategy="no", use_cpu=True, disable_tqdm=True, **extra)


def _lora():
    from peft import LoraConfig

    return LoraConfig(r=HYPER["r"], lora_alpha=HYPER["alpha"], lora_dropout=HYPER["dropout"], target_modules=TARGETS,
                      task_type="CAUSAL_LM")


def worker_trl(data_dir: Path, out_dir: Path, overrides: list[str]) -> dict:
    """TRL's DPOTrainer with a PEFT LoraConfig (reference: the adapter disabled)."""
    import yaml
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
    from trl import DPOTrainer

    from tunesmith.models.load import resolve_model_source

    set_seed(HYPER["seed"])
    source = resolve_model_source(MODEL)
    extra = {k: yaml.safe_load(v) for k, _, v in (item.partition("=") for item in overrides)}
    trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(source), args=_dpo_config(out_dir, **extra),
                         train_dataset=Dataset.from_list(read(data_dir / "train.jsonl")),
                         processing_class=AutoTokenizer.from_pretrained(source), peft_config=_lora())
    result = trainer.train()
    trainer.save_model(str(out_dir / "final"))
    return harness.training_result(training_tokens(data_dir) * HYPER["epochs"], result.metrics["train_runtime"],
                                   STARTED, held_out(out_dir / "final", data_dir))


def recipe(data_dir: Path) -> dict:
    return {
        "name": "bench-dpo", "task": "preference", "seed": HYPER["seed"], "model": {"name": MODEL},
        "data": {"train": str(data_dir / "train.jsonl"), "eval": str(data_dir / "eval.jsonl"),
                 "max_length": HYPER["max_length"], "cache": False},
        "method": {"type": "lora", "r": HYPER["r"], "alpha": HYPER["alpha"], "dropout": HYPER["dropout"],
                   "target_modules": TARGETS},
        "train": {"epochs": HYPER["epochs"], "batch_size": HYPER["batch_size"], "lr": HYPER["lr"],
                  "warmup_ratio": 0.0, "scheduler": "linear", "eval_batch_size": 8, "precision": "bf16"},
        "preference": {"loss": "dpo", "beta": HYPER["beta"]},
    }


def worker_tunesmith(data_dir: Path, out_dir: Path, overrides: list[str]) -> dict:
    train_s, final = harness.train_with_tunesmith(recipe(data_dir), overrides, out_dir)
    return harness.training_result(training_tokens(data_dir) * HYPER["epochs"], train_s, STARTED,
                                   held_out(final, data_dir))


def first_batch_check(data_dir: Path) -> dict:
    """The loss of one batch on the same random-adapter model, TRL vs Tunesmith, per loss."""
    import torch
    from datasets import Dataset
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM
    from trl import DPOTrainer

    from tunesmith.models.load import resolve_model_source

    rows = read(data_dir / "train.jsonl")[: HYPER["batch_size"]]
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(resolve_model_source(MODEL)), _lora())
    harness.randomize_lora_b(model)
    model.eval()
    out = {}
    for ours, theirs in (("dpo", "sigmoid"), ("ipo", "ipo")):
        objective = _objective(ours)
        with torch.no_grad():
            mine = float(objective.loss_sum(model, objective.collate(objective.encode(rows)))) / len(rows)
        with tempfile.TemporaryDirectory() as tmp:
            trainer = DPOTrainer(model=model, args=_dpo_config(Path(tmp), loss_type=[theirs]),
                                 train_dataset=Dataset.from_list(rows), processing_class=objective.tokenizer)
            # Given a PEFT model, TRL copies its adapter as the reference ("ref"); without that
            # copy its reference is the adapter disabled, i.e. the base -- Tunesmith's for LoRA.
            trainer.model.delete_adapter("ref")
            batch = next(iter(trainer.get_train_dataloader()))
            with torch.no_grad():
                anchor = float(trainer.compute_loss(trainer.model.eval(), batch))
        out[ours] = {"tunesmith": mine, "trl": anchor, "abs_diff": abs(mine - anchor)}
    return out


def main() -> None:
    if "--worker" not in sys.argv:
        with tempfile.TemporaryDirectory() as tmp:
            prepare(Path(tmp), HYPER["batch_size"], 1)
            check = first_batch_check(Path(tmp))
        print("first-batch loss, same random-adapter model:")
        for loss, row in check.items():
            verdict = "same" if row["abs_diff"] < 1e-4 else "DIFFERENT"
            print(f"  {loss}: tunesmith {row['tunesmith']:.6f}  trl {row['trl']:.6f}  |diff| {row['abs_diff']:.2e}"
                  f"  {verdict}")
        if "--lever" not in sys.argv:
            sys.argv += ["--lever", "precompute:preference.precompute_reference=true", "--lever",
                         "gc4:train.gradient_checkpointing=true,train.gradient_checkpointing_every_n_layers=4"]
    harness.side_by_side(__file__, __doc__, "trl", {"trl": worker_trl, "tunesmith": worker_tunesmith}, prepare,
                         KEYS, HYPER, train_rows=256, eval_rows=64)


if __name__ == "__main__":
    main()
