"""`train.precision` on this machine: fp32 against bf16 autocast, on the demo and the identity SFT run.

Each shipped recipe runs once per precision with the same seed; only train.precision changes.
Quality is the recipe's headline (demo: held-out accuracy of 500 sentences; identity run:
eval loss, the answers' chrF and the general-ability check), speed is training samples/s and
the wall time of the whole run. fp32 is the anchor of the ratios. On a CPU bf16 autocast is
fast only with AVX512-BF16 or AMX (`train.precision: auto` picks it there); the CPU flags are
printed with the results.

Usage:
  python benchmarks/precision.py [--out DIR] [--recipes demo sft-identity-lora] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from tunesmith.config.load import load_recipe
from tunesmith.runner import run_recipe
from tunesmith.train.precision import bf16_support

RECIPES = Path(__file__).resolve().parents[1] / "src" / "tunesmith" / "recipes"
KEPT = ("accuracy", "macro_f1", "eval_loss", "perplexity", "chrf", "rougeL", "token_f1", "general_chrf")


def run_once(recipe: str, precision: str, out: Path, tag: str) -> dict:
    """Train ``recipe`` at ``precision``; its quality numbers and speed."""
    path = RECIPES / f"{recipe}.yaml"
    config = load_recipe(path, [f"name={recipe}-{precision}-{tag}", f"output_dir={out}",
                                f"train.precision={precision}", "train.save_every=100000"])
    summary = run_recipe(config, base_dir=path.parent, show_progress=False, log=lambda *_: None)
    after = summary["eval_after"]
    row = {k: round(after[k], 4) for k in KEPT if isinstance(after.get(k), (int, float))}
    row.update(samples_per_s=round(summary["train"]["samples_per_s"], 2), train_s=round(summary["train"]["wall_s"], 1),
               used=summary["precision"]["used"])
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None)
    parser.add_argument("--recipes", nargs="+", default=["demo", "sft-identity-lora"])
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="precision-"))
    supported, why = bf16_support("cpu")
    results = {"cpu_bf16": {"supported": supported, "why": why}}
    for recipe in args.recipes:
        for precision in ("fp32", "bf16"):
            rows = [run_once(recipe, precision, out, str(i)) for i in range(args.repeats)]
            speeds = [r["samples_per_s"] for r in rows]
            entry = {**rows[0], "samples_per_s_runs": speeds, "samples_per_s": statistics.median(speeds)}
            results[f"{recipe} {precision}"] = entry
            print(json.dumps({f"{recipe} {precision}": entry}), flush=True)
        anchor = results[f"{recipe} fp32"]["samples_per_s"]
        results[f"{recipe} bf16"]["speed_vs_fp32"] = round(results[f"{recipe} bf16"]["samples_per_s"] / anchor, 3)
    (out / "precision.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
