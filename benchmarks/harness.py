"""Side-by-side benchmark harness: each system runs in a fresh process, alternating.

A fresh process per run makes peak RSS (``ru_maxrss``) belong to that run alone and keeps
one system's warm caches (allocator, oneDNN primitives, tokenizer) from helping the
other. Alternating the order (A B, B A, A B, ...) spreads any slow drift of the machine
over both systems. Each worker prints one JSON object on its last stdout line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from typing import Callable
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path


def peak_rss_mb() -> float:
    """This worker's own peak resident set size in MB (``tunesmith.runner.peak_rss_mb``:
    VmHWM, not ``ru_maxrss``, which keeps the memory of the parent a worker was started from;
    a parent that had run a first-batch check gave TRL and Tunesmith the same 4,356 MB)."""
    from tunesmith.runner import peak_rss_mb as own_peak

    return own_peak()


def train_with_tunesmith(recipe: dict, overrides: list[str], out_dir: Path) -> tuple[float, Path]:
    """Run a recipe (a dict, plus ``key=value`` overrides) in this process, quietly:
    returns the training seconds and the run's ``final/``."""
    from tunesmith.config.load import apply_overrides, validate_recipe
    from tunesmith.runner import run_recipe

    config = validate_recipe(apply_overrides(recipe, overrides))
    summary = run_recipe(config, output_dir=out_dir / "run", show_progress=False, log=lambda *a: None)
    return summary["train"]["wall_s"], out_dir / "run" / "final"


def training_result(tokens: int, train_s: float, started: float, quality: dict) -> dict:
    """A training worker's result: tokens/s over the training seconds, the wall time since
    ``started`` (the worker's start), this process's peak RSS, and the quality numbers."""
    return {"tokens_per_s": tokens / train_s, "train_s": train_s, "wall_s": time.perf_counter() - started,
            "peak_rss_mb": peak_rss_mb(), **quality}


def randomize_lora_b(model, std: float = 0.02) -> None:
    """Give a fresh LoRA model random B matrices (PEFT starts them at zero), so the adapted
    model differs from its base -- a first-batch check then compares a real policy."""
    import torch

    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, std)


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


def side_by_side(script: str, doc: str, anchor: str, workers: dict[str, Callable], prepare: Callable,
                 keys: list[str], hyper: dict, train_rows: int, eval_rows: int) -> None:
    """The command line both training benchmarks share.

    Without ``--worker``: write the data with ``prepare(dir, train_rows, eval_rows)``, run
    the anchor, Tunesmith and any ``--lever`` variants in alternating fresh processes and
    print the summary. With ``--worker NAME``: run ``workers[NAME](data_dir, out_dir,
    overrides)`` once and print its result (the seed in ``hyper`` moved on by the round).
    """
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--train", type=int, default=train_rows)
    ap.add_argument("--eval", type=int, default=eval_rows)
    ap.add_argument("--lever", action="append", default=[],
                    help="NAME:key=value[,key=value]: a Tunesmith variant with recipe overrides")
    ap.add_argument("--anchor-set", action="append", default=[], help="key=value for the anchor's config")
    ap.add_argument("--only-levers", action="store_true", help="skip the default Tunesmith system")
    ap.add_argument("--skip-anchor", action="store_true", help="lever studies: Tunesmith variants only")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--rep", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--set", action="append", default=[], help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        with tempfile.TemporaryDirectory() as out:
            hyper["seed"] += args.rep  # the split was made with the base seed; training varies per round
            emit(workers[args.worker](Path(args.data), Path(out), args.set))
        return

    with tempfile.TemporaryDirectory() as data_dir:
        prepare(Path(data_dir), args.train, args.eval)
        common = ["--data", data_dir]
        systems = {} if args.skip_anchor else {
            anchor: ["--worker", anchor, *common, *(f"--set={s}" for s in args.anchor_set)]}
        if not args.only_levers:
            systems["tunesmith"] = ["--worker", "tunesmith", *common]
        systems.update(lever_systems(args.lever, ["--worker", "tunesmith", *common]))
        results = alternate(Path(script), systems, args.reps)
    summary = summarize(results, next(iter(results)), keys)
    summary["job"] = {"benchmark": Path(script).stem, **hyper, "train_rows": args.train, "eval_rows": args.eval}
    print(json.dumps(summary))
    print_table(summary, keys)
