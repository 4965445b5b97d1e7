"""Throughput of `tunesmith data prepare` on N short rows (default 1,000,000).

Writes a JSONL file of short labelled sentences (with 0.1% broken rows and 2% exact
duplicates), then runs the data stage in a fresh process with validation (drop),
cleaning and exact dedup (``--near`` adds MinHash near-duplicate removal), a stratified
split, and writing the splits. Prints one JSON line: rows, wall seconds, rows/s, peak RSS.

usage: python benchmarks/data_prepare_1m.py [--rows 1000000] [--near]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

WORDS = ("the film was a great fun dull long short story plot actor scene ending music slow fast bright dark "
         "really quite very not at all moving funny sad boring clever silly new old").split()


def write_rows(path: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as fh:
        previous = []
        for i in range(n):
            if i % 1000 == 999:
                fh.write('{"text": broken json\n')
                continue
            if previous and rng.random() < 0.02:
                fh.write(rng.choice(previous))
                continue
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 20))) + f" {i}"
            line = json.dumps({"text": text, "label": "pos" if rng.random() < 0.5 else "neg"}) + "\n"
            fh.write(line)
            if len(previous) < 1000:
                previous.append(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--near", action="store_true", help="also remove near duplicates (MinHash LSH)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        write_rows(tmp / "rows.jsonl", args.rows)
        generate_s = time.perf_counter() - start
        recipe = {"name": "bench", "task": "classification", "model": {"name": "builtin:minilm"},
                  "data": {"train": "rows.jsonl", "eval_size": 0.01, "on_error": "drop", "max_drop_fraction": 0.01,
                           "clean": {}, "dedup": {"exact": True, "near": args.near}},
                  "method": {"type": "lora"}}
        (tmp / "recipe.yaml").write_text(yaml.safe_dump(recipe))
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "tunesmith.cli", "data", "prepare", str(tmp / "recipe.yaml"),
                               "--out", str(tmp / "out")], capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode:
            raise SystemExit(done.stderr[-3000:])
        report = json.loads((tmp / "out" / "data_report.json").read_text())
        child = resource.getrusage(resource.RUSAGE_CHILDREN)
        print(json.dumps({
            "rows": args.rows, "near_dedup": args.near, "file_mb": round((tmp / "rows.jsonl").stat().st_size / 2**20, 1),
            "prepare_wall_s": round(wall, 1), "rows_per_s": round(args.rows / wall), "peak_rss_mb": round(child.ru_maxrss / 1024),
            "rejected": report["validation"]["rejected"] if "validation" in report else None,
            "exact_duplicates": report["dedup"]["exact_duplicates"], "near_duplicates": report["dedup"]["near_duplicates"],
            "train_rows": report["train_rows"], "eval_rows": report["eval_rows"], "generate_s": round(generate_s, 1),
        }))


if __name__ == "__main__":
    main()
