"""How fast `tunesmith train` reports a bad recipe and a taken run directory.

The anchor is the time to import what a training run needs (torch, transformers, peft,
``tunesmith.runner``), which the CLI used to pay before checking the recipe. Each case
runs in a fresh process, ``--rounds`` times; prints the median wall time of each, the
ratio to the anchor, and the slowest imports of the error path (``python -X importtime``).

    python benchmarks/fast_errors.py --rounds 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
TUNESMITH = [sys.executable, "-m", "tunesmith.cli"]
CASES = {
    "typo in the recipe": [*TUNESMITH, "train", str(DEMO), "--set", "train.lrr=1"],
    "run directory taken": [*TUNESMITH, "train", str(DEMO)],
    "anchor: import the training stack": [sys.executable, "-c", "import tunesmith.runner"],
}


def wall(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, capture_output=True)
    return time.perf_counter() - start


def slowest_imports(cmd: list[str], cwd: Path, n: int = 5) -> list[tuple[str, float]]:
    """The ``n`` top-level imports with the largest cumulative time in ``cmd``."""
    err = subprocess.run([cmd[0], "-X", "importtime", *cmd[1:]], cwd=cwd, capture_output=True, text=True).stderr
    rows = []
    for line in err.splitlines():
        if line.startswith("import time:") and "|" in line:
            _, cumulative, name = [p.strip() for p in line.removeprefix("import time:").split("|")]
            if cumulative.isdigit() and not name.startswith(" "):
                rows.append((name, int(cumulative) / 1e6))
    return sorted(rows, key=lambda r: -r[1])[:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        (cwd / "runs" / "demo").mkdir(parents=True)
        (cwd / "runs" / "demo" / "summary.json").write_text("{}")
        times = {name: [] for name in CASES}
        for _ in range(args.rounds):
            for name, cmd in CASES.items():
                times[name].append(wall(cmd, cwd))
        anchor = statistics.median(times["anchor: import the training stack"])
        for name, values in times.items():
            median = statistics.median(values)
            print(json.dumps({"case": name, "median_s": round(median, 3), "min_s": round(min(values), 3),
                              "max_s": round(max(values), 3), "ratio_to_anchor": round(median / anchor, 3)}))
        print(json.dumps({"slowest_imports_on_a_typo": slowest_imports(CASES["typo in the recipe"], cwd)}))


if __name__ == "__main__":
    main()
