"""Evaluation throughput, side by side: HF Trainer.predict / TRL SFTTrainer.evaluate vs Tunesmith.

- classification: builtin:minilm + a fresh LoRA (r=8 on query/key/value), the 500
  held-out rt-snippets sentences of bench_classification, batch 64;
- sft: builtin:smollm2-135m + a fresh LoRA (r=16, every projection), 200 held-out chats
  of the bench_sft mix, batch 8, loss on the last answer.

The model is the same object for both systems; they alternate within one process
(reps each) after one warm-up pass apiece. Reported: examples/s (min/median/max) and
the metric each computed (so a faster wrong answer would show).

Usage: python benchmarks/bench_eval.py [--reps 3] [--task classification|sft|both]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import bench_classification  # noqa: E402
import bench_sft  # noqa: E402
import harness  # noqa: E402


def timed(fn) -> tuple[float, object]:
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


def classification_systems(data_dir: Path, out_dir: Path) -> tuple[dict, int]:
    import numpy as np
    import torch
    from datasets import Dataset
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, Trainer, TrainingArguments

    from tunesmith.models.load import load_tokenizer, resolve_model_source
    from tunesmith.eval.evaluate import evaluate
    from tunesmith.objectives.classification import ClassificationObjective

    torch.manual_seed(0)
    source = resolve_model_source("builtin:minilm")
    tokenizer = load_tokenizer("builtin:minilm")
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=2)
    model = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, r=8, lora_alpha=16,
                                             target_modules=["query", "key", "value"])).eval()
    rows = bench_classification.read(data_dir / "eval.jsonl")
    dataset = Dataset.from_list(rows).map(bench_classification.hf_tokenizer(tokenizer), batched=True,
                                          remove_columns=["text", "label"])
    trainer = Trainer(model=model, args=TrainingArguments(output_dir=str(out_dir), per_device_eval_batch_size=64,
                                                          report_to="none", use_cpu=True, disable_tqdm=True),
                      data_collator=DataCollatorWithPadding(tokenizer))
    objective = ClassificationObjective(tokenizer, bench_classification.LABELS, 64)
    features = objective.encode(rows)

    def hf():
        preds = trainer.predict(dataset)
        return float((np.argmax(preds.predictions, -1) == preds.label_ids).mean())

    def tunesmith():
        return evaluate(objective, model, features, 64, torch.device("cpu"), ("accuracy",))["accuracy"]

    return {"hf": hf, "tunesmith": tunesmith}, len(rows)


def sft_systems(data_dir: Path, out_dir: Path) -> tuple[dict, int]:
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from tunesmith.models.load import load_tokenizer, resolve_model_source
    from tunesmith.eval.evaluate import evaluate
    from tunesmith.objectives.causal_lm import CausalLMObjective

    torch.manual_seed(0)
    source = resolve_model_source("builtin:smollm2-135m")
    tokenizer = load_tokenizer("builtin:smollm2-135m")
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(source),
                           LoraConfig(r=16, lora_alpha=32, target_modules=bench_sft.TARGETS, task_type="CAUSAL_LM"))
    rows = bench_sft.read(data_dir / "eval.jsonl")

    dataset = Dataset.from_list([bench_sft.to_prompt_completion(r) for r in rows])
    trainer = SFTTrainer(model=model, args=SFTConfig(output_dir=str(out_dir), per_device_eval_batch_size=8,
                                                     max_length=256, report_to="none", use_cpu=True, bf16=False,
                                                     disable_tqdm=True),
                         train_dataset=dataset, eval_dataset=dataset, processing_class=tokenizer)
    objective = CausalLMObjective(tokenizer, 256, bench_sft.SYSTEM, last_turn_only=True, padding_free=True)
    features = objective.encode(rows)

    def trl():
        return trainer.evaluate()["eval_loss"]

    def tunesmith():
        return evaluate(objective, model.eval(), features, 8, torch.device("cpu"), ("eval_loss",))["eval_loss"]

    return {"trl": trl, "tunesmith": tunesmith}, len(rows)


def measure(systems: dict, n: int, reps: int) -> dict:
    results: dict[str, list[dict]] = {name: [] for name in systems}
    for name, fn in systems.items():
        fn()  # warm-up: first-call costs (oneDNN primitives, dataset caches) are not throughput
    for rep in range(reps):
        order = list(systems) if rep % 2 == 0 else list(systems)[::-1]
        for name in order:
            seconds, metric = timed(systems[name])
            results[name].append({"examples_per_s": n / seconds, "metric": metric})
            print(json.dumps({"system": name, "rep": rep, "examples_per_s": n / seconds, "metric": metric}), flush=True)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--task", choices=["classification", "sft", "both"], default="both")
    args = ap.parse_args()
    for task in ("classification", "sft") if args.task == "both" else (args.task,):
        with tempfile.TemporaryDirectory() as data_dir, tempfile.TemporaryDirectory() as out_dir:
            if task == "classification":
                bench_classification.prepare(Path(data_dir), 2000, 500)
                systems, n = classification_systems(Path(data_dir), Path(out_dir))
            else:
                bench_sft.prepare(Path(data_dir), 320, 200)
                systems, n = sft_systems(Path(data_dir), Path(out_dir))
            results = measure(systems, n, args.reps)
        summary = harness.summarize(results, next(iter(results)), ["examples_per_s", "metric"])
        summary["job"] = {"benchmark": f"eval-{task}", "examples": n}
        print(json.dumps(summary))
        harness.print_table(summary, ["examples_per_s", "metric"])


if __name__ == "__main__":
    main()
