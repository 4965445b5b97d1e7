"""`train.optimizer` on the demo: held-out accuracy, speed and optimizer-state memory.

The shipped demo recipe (LoRA r=8 on MiniLM, one epoch of rt-snippets, 500 held-out
sentences), run once per optimizer with the same seed; only the optimizer and its learning
rate change (Lion's rate is 10x smaller, as its authors advise; SGD's larger). Also the
demo with train.label_smoothing 0.1. AdamW is the anchor of the ratios. 8-bit AdamW is
bitsandbytes' (>= 0.50 runs it on a CPU).

Usage:
  python benchmarks/optimizers.py [--out DIR] [--only LABEL ...] [--reps N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from tunesmith.config.load import load_recipe
from tunesmith.runner import run_recipe

DEMO = Path(__file__).resolve().parents[1] / "src" / "tunesmith" / "recipes" / "demo.yaml"
VARIANTS = {
    "adamw (lr 2e-3, the demo)": ["train.optimizer=adamw"],
    "adamw_8bit (lr 2e-3)": ["train.optimizer=adamw_8bit"],
    "lion (lr 2e-4)": ["train.optimizer=lion", "train.lr=2e-4"],
    "sgd, momentum 0.9 (lr 5e-2)": ["train.optimizer=sgd", "train.lr=5e-2"],
    "adafactor (lr 2e-3)": ["train.optimizer=adafactor"],
    "adamw + label_smoothing 0.1": ["train.label_smoothing=0.1"],
    "adamw + layer_lr_decay 0.8": ["train.layer_lr_decay=0.8"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None)
    parser.add_argument("--only", nargs="*", default=None, help="run only these variants (labels as printed)")
    parser.add_argument("--reps", type=int, default=1, help="runs per variant, interleaved; speeds are medians")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="optimizers-"))
    runs: dict[str, list[dict]] = {}
    for rep in range(args.reps):
        for i, (label, sets) in enumerate(VARIANTS.items()):
            if args.only and label not in args.only:
                continue
            # fp32 as when the table was first measured (before train.precision: auto).
            config = load_recipe(DEMO, [f"name=v{i}-{rep}", f"output_dir={out}", "train.save_every=1000",
                                        "train.precision=fp32", *sets])
            summary = run_recipe(config, base_dir=DEMO.parent, show_progress=False, log=lambda *_: None)
            train = summary["train"]
            runs.setdefault(label, []).append({
                "accuracy": round(summary["eval_after"]["accuracy"], 4), "macro_f1": round(summary["eval_after"]["macro_f1"], 4),
                "samples_per_s": round(train["samples_per_s"], 1), "train_s": round(train["wall_s"], 1),
                "optimizer_state_mb": train["optimizer_state_mb"]})
            print(json.dumps({label: runs[label][-1], "rep": rep}), flush=True)
    results = {label: {**found[0], "samples_per_s": statistics.median(r["samples_per_s"] for r in found),
                       "train_s": statistics.median(r["train_s"] for r in found), "reps": len(found)}
               for label, found in runs.items()}
    anchor = results.get("adamw (lr 2e-3, the demo)")
    for r in results.values() if anchor else []:
        r["speed_vs_adamw"] = round(r["samples_per_s"] / anchor["samples_per_s"], 3)
        r["state_vs_adamw"] = round(r["optimizer_state_mb"] / anchor["optimizer_state_mb"], 3)
    (out / "optimizers.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
