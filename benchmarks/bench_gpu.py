"""LoRA SFT speed on a GPU: HF Trainer + PEFT (the anchor) vs Tunesmith's loop, with MFU.

A Llama-architecture model built from a config with random weights (speed does not
depend on the weights): by default 24 layers, hidden 1536, SwiGLU 4096, 12 heads / 4 KV
heads, vocab 32,000 = 0.70 B parameters. Synthetic chats of 64-1,024 tokens (lengths
drawn uniformly, seed 0), the loss on the second half of each (the "answer"). LoRA r=16
on every projection, bf16, batch 8, lr 1e-4, SDPA attention, no gradient checkpointing
for either system. The anchor pads each batch to its longest row (DataCollatorForSeq2Seq,
Trainer's default sampler); Tunesmith runs with its defaults (padding-free batches, LM
head only on answer positions).

Reported per run: non-padding tokens/s, peak GPU memory, and model FLOPs utilisation:
4 * N * tokens FLOPs per second (frozen-base LoRA training: forward 2N, backward 2N for
the activations' gradients) over the GPU's dense bf16 peak (``--peak-tflops``, 989 for
H100/H200 SXM).

Usage (when a GPU is lent, through the device tool):
  python benchmarks/bench_gpu.py [--reps 3] [--steps 30]
  python benchmarks/bench_gpu.py --tiny --steps 3 --reps 1     (a CPU smoke run)
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import harness  # noqa: E402

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
KEYS = ["tokens_per_s", "peak_gpu_gb", "mfu", "loss"]


def build_model(tiny: bool):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if tiny:
        config = LlamaConfig(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048)
    else:
        config = LlamaConfig(vocab_size=32000, hidden_size=1536, intermediate_size=4096, num_hidden_layers=24,
                             num_attention_heads=12, num_key_value_heads=4, max_position_embeddings=2048)
    config._attn_implementation = "sdpa"
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return LlamaForCausalLM(config).to(dtype)


def features(n: int, vocab: int, tiny: bool) -> list[dict]:
    rng = random.Random(0)
    rows = []
    for _ in range(n):
        length = rng.randint(16, 64) if tiny else rng.randint(64, 1024)
        ids = [rng.randrange(3, vocab) for _ in range(length)]
        rows.append({"input_ids": ids, "labels": [-100] * (length // 2) + ids[length // 2 :]})
    return rows


def lora(model):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=TARGETS,
                                            task_type="CAUSAL_LM"))


def result(model, tokens: int, seconds: float, loss: float, peak_tflops: float) -> dict:
    import torch

    n = sum(p.numel() for p in model.parameters())
    gpu = torch.cuda.is_available()
    return {"tokens_per_s": tokens / seconds, "params": n, "loss": loss,
            "peak_gpu_gb": torch.cuda.max_memory_allocated() / 2**30 if gpu else None,
            "mfu": 4 * n * tokens / seconds / (peak_tflops * 1e12) if gpu else None}


def worker_hf(args) -> dict:
    import torch
    from datasets import Dataset
    from transformers import DataCollatorForSeq2Seq, PreTrainedTokenizerFast, Trainer, TrainingArguments

    model = lora(build_model(args.tiny))
    rows = features(args.steps * args.batch, model.config.vocab_size, args.tiny)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=_null_tokenizer(), pad_token="<pad>")
    trainer = Trainer(
        model=model,
        args=TrainingArguments(output_dir=args.out, per_device_train_batch_size=args.batch, max_steps=args.steps,
                               learning_rate=1e-4, bf16=torch.cuda.is_available(), report_to="none",
                               save_strategy="no", logging_steps=10, disable_tqdm=True, seed=0,
                               use_cpu=not torch.cuda.is_available(), dataloader_num_workers=2),
        train_dataset=Dataset.from_list(rows),
        data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100),
    )
    out = trainer.train()
    tokens = sum(len(r["input_ids"]) for r in rows)
    return result(model, tokens, out.metrics["train_runtime"], out.metrics["train_loss"], args.peak_tflops)


def _null_tokenizer():
    from tokenizers import Tokenizer, models

    return Tokenizer(models.WordLevel({"<pad>": 0, "<unk>": 1}, unk_token="<unk>"))


def worker_tunesmith(args) -> dict:
    import torch
    from accelerate import Accelerator

    from tunesmith.config.schema import TrainConfig
    from tunesmith.objectives.causal_lm import CausalLMObjective
    from tunesmith.train.backend import Backend
    from tunesmith.train.loop import train

    model = lora(build_model(args.tiny))
    rows = features(args.steps * args.batch, model.config.vocab_size, args.tiny)
    tokenizer = type("Pad", (), {"pad_token_id": 0})()
    objective = CausalLMObjective(tokenizer, 2048, padding_free=True)
    cfg = TrainConfig(max_steps=args.steps, batch_size=args.batch, lr=1e-4, scheduler="linear", warmup_ratio=0.0,
                      precision="bf16" if torch.cuda.is_available() else "fp32", log_every=10)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    model.to(accelerator.device)
    stats = train(model, objective, rows, cfg, lr=1e-4, seed=0, run_dir=Path(args.out), backend=Backend(accelerator),
                  show_progress=False)
    losses = [json.loads(line)["loss"] for line in (Path(args.out) / "metrics.jsonl").read_text().splitlines()]
    return result(accelerator.unwrap_model(model), stats.tokens, stats.wall_s, losses[-1], args.peak_tflops)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--peak-tflops", type=float, default=989.0)
    ap.add_argument("--tiny", action="store_true", help="a 2-layer model: checks the script itself, on any machine")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--rep", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        harness.emit(worker_hf(args) if args.worker == "hf" else worker_tunesmith(args))
        return
    common = ["--steps", str(args.steps), "--batch", str(args.batch), "--peak-tflops", str(args.peak_tflops)]
    common += ["--tiny"] if args.tiny else []
    with tempfile.TemporaryDirectory() as out_hf, tempfile.TemporaryDirectory() as out_ts:
        systems = {"hf": ["--worker", "hf", "--out", out_hf, *common],
                   "tunesmith": ["--worker", "tunesmith", "--out", out_ts, *common]}
        results = harness.alternate(Path(__file__), systems, args.reps)
    summary = harness.summarize(results, "hf", KEYS)
    summary["job"] = {"benchmark": "gpu-lora-sft", "steps": args.steps, "batch": args.batch, "tiny": args.tiny,
                      "params": results["hf"][0]["params"]}
    print(json.dumps(summary))
    harness.print_table(summary, KEYS)


if __name__ == "__main__":
    main()
