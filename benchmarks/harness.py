"""Side-by-side benchmark harness: each system runs in a fresh process, alternating.

A fresh process per run makes peak RSS (``ru_maxrss``) belong to that run alone and keeps
one system's warm caches (allocator, oneDNN primitives, tokenizer) from helping the
other. Alternating the order (A B, B A, A B, ...) spreads any slow drift of the machine
over both systems. Each worker prints one JSON object on its last stdout line.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path


def peak_rss_mb() -> float:
    """This process's peak resident set size (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def emit(result: dict) -> None:
    """A worker's last act: its result as one JSON line on stdout."""
    print(json.dumps(result), flush=True)


def run_worker(script: Path, args: list[str]) -> dict:
    """Run ``script args`` in a fresh interpreter; return the JSON its last stdout line holds."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, env=dict(os.environ))
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-6000:])
        raise SystemExit(f"worker {args} failed with exit code {proc.returncode}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = round(time.perf_counter() - started, 2)
    return result


def alternate(script: Path, systems: dict[str, list[str]], reps: int, log=print) -> dict[str, list[dict]]:
    """``reps`` rounds over ``systems`` (name -> worker arguments), the order reversed every other round."""
    results: dict[str, list[dict]] = {name: [] for name in systems}
    for rep in range(reps):
        order = list(systems) if rep % 2 == 0 else list(systems)[::-1]
        for name in order:
            # Each round trains with its own seed (same for every system): quality medians then
            # cover initialisation and data-order noise, not one lucky or unlucky draw.
            result = run_worker(script, [*systems[name], "--rep", str(rep)])
            result.update(system=name, rep=rep)
            results[name].append(result)
            log(json.dumps(result))
    return results


def lever_systems(levers: list[str], worker: list[str]) -> dict[str, list[str]]:
    """``NAME:key=value,key=value`` options -> Tunesmith variants with those recipe overrides."""
    systems = {}
    for lever in levers:
        name, _, sets = lever.partition(":")
        systems[f"tunesmith[{name}]"] = [*worker, *(f"--set={s}" for s in sets.split(",") if s)]
    return systems


def spread(values: list[float]) -> dict:
    """min / median / max of a list of numbers."""
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def summarize(results: dict[str, list[dict]], anchor: str, keys: list[str]) -> dict:
    """Per system and key: min/median/max; then each system's median over the anchor's."""
    table = {s: {k: spread([r[k] for r in runs if r.get(k) is not None]) for k in keys
                 if any(r.get(k) is not None for r in runs)}
             for s, runs in results.items()}
    ratios = {s: {k: round(table[s][k]["median"] / table[anchor][k]["median"], 3)
                  for k in table[s] if k in table[anchor] and table[anchor][k]["median"]}
              for s in table if s != anchor}
    return {"machine": machine(), "reps": len(results[anchor]), "anchor": anchor, "table": table, "ratios": ratios}


def machine() -> dict:
    """What the numbers were measured on."""
    import torch

    info = {"cpu_cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        import peft
        import transformers

        info.update(transformers=transformers.__version__, peft=peft.__version__)
        import trl

        info["trl"] = trl.__version__
    except ImportError:
        pass
    return info


def print_table(summary: dict, keys: list[str]) -> None:
    """Human-readable medians (min-max) and ratios, after the JSON lines."""
    for system, row in summary["table"].items():
        cells = [f"{k}={row[k]['median']:.4g} ({row[k]['min']:.4g}-{row[k]['max']:.4g})" for k in keys if k in row]
        print(f"{system:>12}: " + ", ".join(cells))
    for system, row in summary["ratios"].items():
        print(f"{system:>12} / {summary['anchor']}: " + ", ".join(f"{k} x{v}" for k, v in row.items()))
