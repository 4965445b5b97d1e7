"""`tunesmith plan`'s estimates against measured training runs.

Each configuration is a recipe trained for a few steps in its own process
(`tunesmith train`), on rows longer than max_length so that every micro-batch is the
longest one (the shape the plan assumes): a classifier truncates them; pretraining packs
them (`data.packing`), because unpacked, each document's last chunk is short and a
padding-free micro-batch holds fewer tokens than planned. Measured: peak RSS of the process above its
baseline (the resident memory just before the model loads, in summary.json) and the
median step time (metrics.jsonl's step_s, from the second step on). Predicted: the same
two numbers from `tunesmith plan --json` on the same recipe, computed in this process
before the run.

The grid: methods (full, lora, ia3, freeze) x two models (SmolLM2-135M as a causal LM,
MiniLM-L6 as a classifier) x two lengths x with and without gradient checkpointing.

Usage:
  python benchmarks/plan_accuracy.py [--methods full,lora] [--steps 4] [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from tunesmith.testing import measured_peak_and_step, write_long_rows

MODELS = {"smollm2": ("builtin:smollm2-135m", "pretrain", (128, 256), 4),
          "minilm": ("builtin:minilm", "classification", (128, 256), 16)}


def recipe(model_key: str, method: str, length: int, checkpointing: bool, steps: int, folder: Path) -> dict:
    name, task, _, batch = MODELS[model_key]
    return {
        "name": f"{model_key}-{method}-{length}-{'gc' if checkpointing else 'nogc'}", "task": task,
        "output_dir": str(folder / "runs"), "model": {"name": name},
        "data": {"train": str(folder / "rows.jsonl"), "eval_size": 4, "max_length": length, "cache": False,
                 "packing": task == "pretrain"},
        "method": {"type": method},
        "train": {"max_steps": steps, "batch_size": batch, "log_every": 1, "eval_batch_size": 4,
                  "gradient_checkpointing": checkpointing, "group_by_length": False},
        "eval": {"generate": False, "forgetting": False},
    }


def predict(recipe_path: Path) -> dict:
    out = subprocess.run([sys.executable, "-m", "tunesmith", "plan", str(recipe_path), "--json"],
                         check=True, capture_output=True, text=True).stdout
    plan = json.loads(out)
    return {"peak_mb": (plan["total_bytes"] - plan["components"]["baseline"]) / 2**20,
            "step_s": plan["time"]["step_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="full,lora,ia3,freeze")
    parser.add_argument("--models", default="smollm2,minilm")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="one length, no checkpointing variants")
    parser.add_argument("--only", help="comma-separated configuration names to run (e.g. smollm2-lora-128-gc)")
    parser.add_argument("--measured", default=str(Path(__file__).resolve().parents[1] / "docs" / "results" /
                                                  "plan-accuracy-measured.json"),
                        help="JSON file keeping the measured runs: configurations already in it are not trained "
                        "again, so the predictions can be re-checked against the same measurements")
    args = parser.parse_args()
    rows = []
    store = Path(args.measured)
    known = json.loads(store.read_text()) if store.is_file() else {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_long_rows(folder / "rows.jsonl")
        for model_key in args.models.split(","):
            lengths = MODELS[model_key][2][:1] if args.quick else MODELS[model_key][2]
            for method in args.methods.split(","):
                for length in lengths:
                    for checkpointing in ((False,) if args.quick else (False, True)):
                        spec = recipe(model_key, method, length, checkpointing, args.steps, folder)
                        if args.only and spec["name"] not in args.only.split(","):
                            continue
                        path = folder / f"{spec['name']}.yaml"
                        path.write_text(yaml.safe_dump(spec))
                        predicted = predict(path)
                        measured = known.get(spec["name"]) or measured_peak_and_step(path)
                        known[spec["name"]] = measured
                        store.write_text(json.dumps(known, indent=1))
                        row = {"config": spec["name"], **{f"pred_{k}": v for k, v in predicted.items()},
                               **{f"meas_{k}": v for k, v in measured.items()}}
                        row["mem_err"] = row["pred_peak_mb"] / row["meas_peak_mb"] - 1
                        row["time_err"] = (row["pred_step_s"] / row["meas_step_s"] - 1) if row["meas_step_s"] else None
                        rows.append(row)
                        print(f"{row['config']:28s} memory {row['pred_peak_mb']:7.0f} / {row['meas_peak_mb']:7.0f} MB "
                              f"({100 * row['mem_err']:+5.1f}%)   step {row['pred_step_s']:6.2f} / "
                              f"{row['meas_step_s'] or 0:6.2f} s ({100 * (row['time_err'] or 0):+5.1f}%)", flush=True)
    mem = [abs(r["mem_err"]) for r in rows]
    times = [abs(r["time_err"]) for r in rows if r["time_err"] is not None]
    print(f"\n{len(rows)} configurations: memory error median {100 * statistics.median(mem):.1f}%, worst "
          f"{100 * max(mem):.1f}%; step time error median {100 * statistics.median(times):.1f}%, worst "
          f"{100 * max(times):.1f}%")


if __name__ == "__main__":
    main()
