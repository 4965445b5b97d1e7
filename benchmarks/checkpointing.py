"""`train.gradient_checkpointing` on the identity SFT run: speed and peak memory without it, and
with every block, every 2nd or every 4th block recomputed (`gradient_checkpointing_every_n_layers`).

The shipped sft-identity-lora recipe (SmolLM2-135M-Instruct, LoRA r=16, max_length 128),
40 optimizer steps, at micro-batch 8 (the recipe's) and 32, each variant in its own process
(peak RSS is a per-process high-water mark). Reported: training samples/s, peak RSS, the
baseline RSS before the model loaded, `tunesmith plan --data`'s peak for the variant, and
the last logged training loss (equal with and without: checkpointing recomputes, it does
not approximate). Also what
`gradient_checkpointing: auto` chose at a budget twice the plan without it, and at 0.95x it.

Usage:
  python benchmarks/checkpointing.py [--out DIR] [--steps 40]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

RECIPE = Path(__file__).resolve().parents[1] / "src" / "tunesmith" / "recipes" / "sft-identity-lora.yaml"
QUICK = ["eval.forgetting=false", "eval.probes=[]", "data.max_eval_samples=8", "train.eval_every=null",
         "train.save_every=100000"]


def run(out: Path, name: str, sets: list[str]) -> dict:
    """One training run in its own process; what its summary says about speed and memory."""
    args = [sys.executable, "-m", "tunesmith", "train", str(RECIPE), "--set", f"name={name}",
            "--set", f"output_dir={out}", *[x for s in QUICK + sets for x in ("--set", s)], "--force"]
    subprocess.run(args, check=True, capture_output=True, text=True)
    summary = json.loads((out / name / "summary.json").read_text())
    losses = [json.loads(line) for line in (out / name / "metrics.jsonl").read_text().splitlines()]
    train = summary["train"]
    return {"samples_per_s": round(train["samples_per_s"], 2), "peak_rss_mb": train["peak_rss_mb"],
            "baseline_rss_mb": train["baseline_rss_mb"], "gradient_checkpointing": train["gradient_checkpointing"],
            "every_n_layers": train["gradient_checkpointing_every_n_layers"],
            "last_loss": round([x for x in losses if "loss" in x][-1]["loss"], 5)}


def planned_mb(sets: list[str]) -> float:
    """`tunesmith plan --data`'s peak-memory estimate (MB) of the recipe with ``sets``: the
    number train's preflight and gradient_checkpointing: auto go by."""
    args = [sys.executable, "-m", "tunesmith", "plan", str(RECIPE), "--data", "--json",
            *[x for s in QUICK + sets for x in ("--set", s)]]
    done = subprocess.run(args, check=True, capture_output=True, text=True)
    return json.loads(done.stdout[done.stdout.index("{"):])["total_bytes"] / 2**20


# Each variant's settings: off, and transformers' checkpointing of every block, every 2nd, every 4th.
VARIANTS = {
    "off": ["train.gradient_checkpointing=false"],
    "every block": ["train.gradient_checkpointing=true"],
    "every 2nd block": ["train.gradient_checkpointing=true", "train.gradient_checkpointing_every_n_layers=2"],
    "every 4th block": ["train.gradient_checkpointing=true", "train.gradient_checkpointing_every_n_layers=4"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="checkpointing-"))
    saved = out / "checkpointing.json"
    results = json.loads(saved.read_text()) if saved.is_file() else {}  # a rerun keeps what was measured
    for batch in (8, 32):
        for variant, sets in VARIANTS.items():
            label = f"batch {batch}, checkpointing {variant}"
            if label in results:
                continue
            sets = [f"train.batch_size={batch}", *sets]
            slug = f"b{batch}-{variant.replace(' ', '-')}"
            results[label] = run(out, slug, [*sets, f"train.max_steps={args.steps}"])
            results[label]["planned_peak_mb"] = round(planned_mb(sets), 1)
            print(json.dumps({label: results[label]}), flush=True)
            saved.write_text(json.dumps(results, indent=2))
        off = results[f"batch {batch}, checkpointing off"]
        for variant in list(VARIANTS)[1:]:
            on = results[f"batch {batch}, checkpointing {variant}"]
            on["speed_vs_off"] = round(on["samples_per_s"] / off["samples_per_s"], 3)
            on["peak_above_baseline_vs_off"] = round((on["peak_rss_mb"] - on["baseline_rss_mb"])
                                                     / (off["peak_rss_mb"] - off["baseline_rss_mb"]), 3)
    # auto at budgets around the plan without checkpointing: twice it (fits), and just under it.
    planned = planned_mb(["train.batch_size=32", "train.gradient_checkpointing=false"]) / 1024
    results["plan at batch 32 without checkpointing (GiB)"] = round(planned, 3)
    for label, budget in (("auto, budget 2x the plan", 2 * planned), ("auto, budget 0.95x the plan", 0.95 * planned)):
        results[label] = run(out, f"auto-{budget:.2f}", ["train.batch_size=32", "train.max_steps=2",
                                                         "train.gradient_checkpointing=auto",
                                                         f"train.memory_budget={budget:.3f}"])
        results[label]["budget_gib"] = round(budget, 3)
        print(json.dumps({label: results[label]}), flush=True)
    saved.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
