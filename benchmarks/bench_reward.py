"""Reward models, side by side: TRL's RewardTrainer (the anchor) vs Tunesmith's ``task: reward``.

The data, model and LoRA settings of ``bench_preference.py``: builtin:rt-review-ratings
pairs by rating (gap >= 3), conversational prompt/chosen/rejected rows through SmolLM2's
chat template, builtin:smollm2-135m with a one-output sequence-classification head and
LoRA (r=16, alpha=32, dropout 0 on q/k/v/o; the head trains fully in both), one epoch,
batch 8, lr 1e-4 (linear decay, no warmup), max_length 128, bf16 autocast in both (TRL's
CPU default). Everything else is each system's default (TRL: gradient checkpointing on).

First, the formula check: both systems compute the Bradley-Terry loss of one batch of 8
pairs on the same model (random head, random LoRA B); the difference must be below 1e-4.

Reported per run: training tokens/s (prompt+chosen and prompt+rejected tokens of every
pair, counted once by one function for both), wall time, peak RSS, and the held-out
pairwise accuracy and loss of the trained model on the same pairs, computed by one
function for both.

Usage:
  python benchmarks/bench_reward.py [--reps 2] [--train 256] [--eval 64]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

STARTED = time.perf_counter()
sys.path.insert(0, str(Path(__file__).parent))
import harness  # noqa: E402
from bench_preference import MODEL, TARGETS, prepare, read  # noqa: E402

HYPER = {"r": 16, "alpha": 32, "dropout": 0.0, "epochs": 1, "batch_size": 8, "lr": 1e-4, "max_length": 128,
         "seed": 42, "min_gap": 3.0}
KEYS = ["tokens_per_s", "train_s", "wall_s", "peak_rss_mb", "accuracy", "eval_loss"]


def _objective():
    from transformers import AutoTokenizer

    from tunesmith.models.load import resolve_model_source
    from tunesmith.objectives.reward import RewardObjective

    # padding_free as the recipe trains: each pair one row, its prompt once (the formula check's path too).
    return RewardObjective(AutoTokenizer.from_pretrained(resolve_model_source(MODEL)), HYPER["max_length"],
                           padding_free=True)


def training_tokens(data_dir: Path) -> int:
    """Tokens one epoch pushes through the model: prompt+chosen and prompt+rejected per pair."""
    return sum(len(f["chosen_ids"]) + len(f["rejected_ids"]) for f in _objective().encode(read(data_dir / "train.jsonl")))


def _base_model():
    from transformers import AutoModelForSequenceClassification

    from tunesmith.models.load import resolve_model_source

    model = AutoModelForSequenceClassification.from_pretrained(resolve_model_source(MODEL), num_labels=1)
    model.config.pad_token_id = _objective().tokenizer.pad_token_id
    return model


def held_out(final_dir: Path, data_dir: Path) -> dict:
    """Pairwise accuracy and Bradley-Terry loss of a trained adapter on the held-out pairs (one function for both)."""
    import torch
    from peft import PeftModel

    from tunesmith.eval.evaluate import evaluate

    objective = _objective()
    model = PeftModel.from_pretrained(_base_model(), final_dir)
    features = objective.encode(read(data_dir / "eval.jsonl"))
    scores = evaluate(objective, model, features, 8, torch.device("cpu"), ("pairwise_accuracy", "eval_loss"))
    return {"accuracy": scores["pairwise_accuracy"], "eval_loss": scores["eval_loss"]}


def _reward_config(out_dir: Path, **extra):
    from trl import RewardConfig

    return RewardConfig(output_dir=str(out_dir), per_device_train_batch_size=HYPER["batch_size"],
                        num_train_epochs=HYPER["epochs"], learning_rate=HYPER["lr"], lr_scheduler_type="linear",
                        max_length=HYPER["max_length"], seed=HYPER["seed"], report_to="none", save_strategy="no",
                        use_cpu=True, disable_tqdm=True, **extra)


def _lora():
    from peft import LoraConfig

    return LoraConfig(r=HYPER["r"], lora_alpha=HYPER["alpha"], lora_dropout=HYPER["dropout"], target_modules=TARGETS,
                      task_type="SEQ_CLS")


def worker_trl(data_dir: Path, out_dir: Path, overrides: list[str]) -> dict:
    """TRL's RewardTrainer with a PEFT LoraConfig (the score head in modules_to_save)."""
    import yaml
    from datasets import Dataset
    from transformers import set_seed
    from trl import RewardTrainer

    set_seed(HYPER["seed"])
    extra = {k: yaml.safe_load(v) for k, _, v in (item.partition("=") for item in overrides)}
    trainer = RewardTrainer(model=_base_model(), args=_reward_config(out_dir, **extra),
                            train_dataset=Dataset.from_list(read(data_dir / "train.jsonl")),
                            processing_class=_objective().tokenizer, peft_config=_lora())
    result = trainer.train()
    trainer.save_model(str(out_dir / "final"))
    return harness.training_result(training_tokens(data_dir) * HYPER["epochs"], result.metrics["train_runtime"],
                                   STARTED, held_out(out_dir / "final", data_dir))


def recipe(data_dir: Path) -> dict:
    """bench_preference's recipe (same data, model, LoRA, batch, precision) as a reward model."""
    import bench_preference

    settings = bench_preference.recipe(data_dir)
    del settings["preference"]
    settings.update(name="bench-reward", task="reward", seed=HYPER["seed"], eval={"probes": []})
    settings["train"]["lr"] = HYPER["lr"]
    return settings


def worker_tunesmith(data_dir: Path, out_dir: Path, overrides: list[str]) -> dict:
    train_s, final = harness.train_with_tunesmith(recipe(data_dir), overrides, out_dir)
    return harness.training_result(training_tokens(data_dir) * HYPER["epochs"], train_s, STARTED,
                                   held_out(final, data_dir))


def first_batch_check(data_dir: Path) -> dict:
    """The Bradley-Terry loss of one batch on the same random model, TRL vs Tunesmith."""
    import torch
    from datasets import Dataset
    from peft import get_peft_model
    from trl import RewardTrainer

    rows = read(data_dir / "train.jsonl")[: HYPER["batch_size"]]
    torch.manual_seed(0)
    base = _base_model()
    with torch.no_grad():  # a head large enough that the pairs' rewards differ (the loss is far from log 2)
        base.score.weight.normal_(0, 0.5)
    model = get_peft_model(base, _lora())
    harness.randomize_lora_b(model)
    model.eval()
    objective = _objective()
    with torch.no_grad():
        mine = float(objective.loss_sum(model, objective.collate(objective.encode(rows)))) / len(rows)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = RewardTrainer(model=model, args=_reward_config(Path(tmp)), train_dataset=Dataset.from_list(rows),
                                processing_class=objective.tokenizer)
        batch = next(iter(trainer.get_train_dataloader()))
        with torch.no_grad():
            anchor = float(trainer.compute_loss(trainer.model.eval(), batch))
    return {"tunesmith": mine, "trl": anchor, "abs_diff": abs(mine - anchor)}


def main() -> None:
    if "--worker" not in sys.argv:
        with tempfile.TemporaryDirectory() as tmp:
            prepare(Path(tmp), HYPER["batch_size"], 1)
            row = first_batch_check(Path(tmp))
        verdict = "same" if row["abs_diff"] < 1e-4 else "DIFFERENT"
        print(f"first-batch Bradley-Terry loss, same random model: tunesmith {row['tunesmith']:.6f}  "
              f"trl {row['trl']:.6f}  |diff| {row['abs_diff']:.2e}  {verdict}")
    harness.side_by_side(__file__, __doc__, "trl", {"trl": worker_trl, "tunesmith": worker_tunesmith}, prepare,
                         KEYS, HYPER, train_rows=256, eval_rows=64)


if __name__ == "__main__":
    main()
