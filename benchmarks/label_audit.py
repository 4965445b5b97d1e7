"""`tunesmith data audit` on the demo data with labels flipped on purpose.

1. rt-snippets (10,568 sentences) is split, seeded: 500 held-out sentences with their true
   labels, the rest for training, of which `--flip` (default 5%) get the other label.
2. `data audit` (cleanlab over a probe on MiniLM's frozen embeddings, 5 folds) lists
   suspects: detection precision and recall against the flipped rows.
3. The demo recipe trains on the noisy rows (the anchor) and on the rows `--fix drop` and
   `--fix relabel` leave; held-out accuracy on the 500 true labels.

Usage:
  python benchmarks/label_audit.py [--flip 0.05] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from tunesmith.data.sources import load_records

DEMO = Path(__file__).resolve().parents[1] / "src" / "tunesmith" / "recipes" / "demo.yaml"


def write_rows(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps({"text": r["text"], "label": r["label"]}) + "\n" for r in rows))


def train(recipe: Path, train_file: Path, out: Path) -> dict:
    cmd = [sys.executable, "-m", "tunesmith", "train", str(recipe), "--output-dir", str(out), "--json",
           "--no-progress", "--set", f"data.train={train_file}", "--set", "train.save_every=null"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flip", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="label-audit-"))
    rows = [{"text": r["text"], "label": r["label"]} for r in load_records("builtin:rt-snippets", "classification")]
    rng = random.Random(args.seed)
    rng.shuffle(rows)
    held_out, train_rows = rows[:500], rows[500:]
    flipped = set(rng.sample(range(len(train_rows)), round(args.flip * len(train_rows))))
    for i in flipped:
        train_rows[i]["label"] = "negative" if train_rows[i]["label"] == "positive" else "positive"
    write_rows(work / "noisy.jsonl", train_rows)
    write_rows(work / "eval.jsonl", held_out)
    recipe = yaml.safe_load(DEMO.read_text())
    recipe["data"] = {"train": str(work / "noisy.jsonl"), "eval": str(work / "eval.jsonl"), "max_length": 64}
    recipe_path = work / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe))

    started = time.perf_counter()
    for fix in ("drop", "relabel"):
        subprocess.run([sys.executable, "-m", "tunesmith", "data", "audit", str(recipe_path), "--fix", fix,
                        "--out", str(work / fix)], check=True, capture_output=True, text=True)
    audit_s = (time.perf_counter() - started) / 2
    issues = [json.loads(x) for x in (work / "drop" / "label_issues.jsonl").read_text().splitlines()]
    found = {i["line"] - 1 for i in issues}
    hits = len(found & flipped)
    print(f"machine: 2-core CPU; {len(train_rows)} training rows, {len(flipped)} labels flipped (seed {args.seed})")
    print(f"audit: {len(issues)} suspects in {audit_s:.0f} s; precision {hits / max(len(found), 1):.3f}, "
          f"recall {hits / len(flipped):.3f}")
    results = {}
    for name, path in (("noisy (anchor)", work / "noisy.jsonl"), ("--fix drop", work / "drop" / "noisy.cleaned.jsonl"),
                       ("--fix relabel", work / "relabel" / "noisy.cleaned.jsonl")):
        summary = train(recipe_path, path, work / f"run-{len(results)}")
        results[name] = summary["eval_after"]["accuracy"]
        rows_used = len(path.read_text().splitlines())
        print(f"{name:15s} {rows_used:6d} rows: held-out accuracy {results[name]:.4f} "
              f"({results[name] - results['noisy (anchor)']:+.4f} vs noisy)")


if __name__ == "__main__":
    main()
