"""``tunesmith compare``: the method comparison table of the guides, measured on your task.

Every variant trains the same recipe (same data, seed and step budget) in its own
process, so peak memory is that variant's own and one failure can't take the others
down. Each variant's learning rate is its method's recommended default unless the
recipe's is kept on purpose (``keep_lr``): one rate can't suit full fine-tuning and
soft prompts alike. Results go to ``compare.md``, ``compare.csv``, ``compare.json`` and
``compare.png`` (plus ``rank_study.png`` for the LoRA rank study).
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from tunesmith.config.methods import PRESETS
from tunesmith.config.schema import RecipeConfig
from tunesmith.config.section import check_safe_name
from tunesmith.errors import ConfigError
from tunesmith.objectives.tasks import spec_for
from tunesmith.rundir import RunDir

# Named variants (the methods of the guides' comparison table, with the settings the
# guides and the papers use by default) come from the method catalog.
DEFAULT_METHODS = "full,freeze,lora,dora,adalora,ia3,prefix,prompt,ptuning,ptuning2,adapter,bitfit"
# Query and value projections per architecture, for the LoRA paper's rank study.
QUERY_VALUE = {"bert": ("query", "value"), "roberta": ("query", "value"), "llama": ("q_proj", "v_proj"),
               "mistral": ("q_proj", "v_proj"), "qwen2": ("q_proj", "v_proj")}
RANKS = (1, 2, 4, 8, 16)


@dataclass
class Variant:
    label: str
    method: dict
    group: str = "methods"  # "methods" or "rank-study"
    meta: dict = field(default_factory=dict)


def parse_variants(methods: str | None, extra: list[str], rank_study: bool, model_type: str | None,
                   ranks: tuple[int, ...] = RANKS) -> list[Variant]:
    """Variants from ``--methods a,b``, ``--variant LABEL=JSON`` and ``--rank-study``.

    Raises:
        ConfigError: unknown preset, malformed JSON, duplicate label, or a rank study on an
            architecture whose query/value projections we don't know.
    """
    variants: list[Variant] = []
    for name in [m.strip() for m in (methods or "").split(",") if m.strip()]:
        if name not in PRESETS:
            raise ConfigError(f"unknown method '{name}' in --methods.", "Choose from: " + ", ".join(PRESETS) + ".")
        variants.append(Variant(name, dict(PRESETS[name])))
    for spec in extra:
        label, sep, body = spec.partition("=")
        try:
            method = json.loads(body) if sep else None
        except json.JSONDecodeError as exc:
            method = None
            problem = f"its JSON is invalid ({exc.msg} at character {exc.pos})"
        else:
            problem = "it needs the form LABEL={\"type\": ..., ...}"
        if not isinstance(method, dict) or not label:
            raise ConfigError(f"--variant '{spec}': {problem}.", 'Example: --variant lora-r4=\'{"type": "lora", "r": 4}\'')
        try:
            check_safe_name(label)  # the label names the variant's run folder
        except ValueError as exc:
            raise ConfigError(f"--variant label {exc}.", "Example: --variant lora-r4='{...}'") from None
        variants.append(Variant(label, method))
    if rank_study:
        if model_type not in QUERY_VALUE:
            raise ConfigError(
                f"the rank study needs the query/value projection names of model type '{model_type}'.",
                "Run it on a BERT- or Llama-style model, or pass the variants yourself with --variant.",
            )
        q, v = QUERY_VALUE[model_type]
        for targets, tag in (([q], "q"), ([q, v], "qv")):
            for r in ranks:
                # alpha = 2r keeps the scale alpha/r fixed across ranks, so rank is the only change.
                variants.append(Variant(f"lora-r{r}-{tag}", {"type": "lora", "r": r, "alpha": 2 * r,
                                                             "target_modules": targets},
                                        group="rank-study", meta={"r": r, "targets": tag}))
    labels = [v.label for v in variants]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise ConfigError(f"variant labels must be unique; repeated: {', '.join(duplicates)}.")
    if not variants:
        raise ConfigError("nothing to compare.", "Pass --methods, --variant or --rank-study.")
    return variants


def _dir_mb(path: Path) -> float | None:
    if not path.is_dir():
        return None
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and p.suffix in {".safetensors", ".bin"}) / 1e6


def run_variant(recipe: Path, variant: Variant, out_dir: Path, overrides: list[str], keep_lr: bool,
                config: RecipeConfig) -> dict:
    """Train one variant in a subprocess; return its row of the table.

    The back-translators this process loaded with ``--plugin`` are loaded in the child
    too, so a recipe that uses one trains the same in every variant.
    """
    from tunesmith.data.paraphrase import loaded_plugins  # torch-free

    run_dir = out_dir / "runs" / variant.label
    args = [sys.executable, "-m", "tunesmith.cli", "train", str(recipe), "--output-dir", str(run_dir),
            "--overwrite", "--no-progress"]
    for name in loaded_plugins():
        args += ["--plugin", name]
    for o in overrides:
        args += ["--set", o]
    args += ["--set", "method=" + json.dumps(variant.method)]
    if not keep_lr:
        args += ["--set", "train.lr=null"]  # the method's recommended rate
    started = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True)
    row: dict = {"label": variant.label, "group": variant.group, "method": variant.method, **variant.meta,
                 "process_wall_s": round(time.perf_counter() - started, 1)}
    summary = RunDir(run_dir).read_summary()
    if proc.returncode != 0 or summary.get("status") != "completed":
        row.update(status="failed", error=summary.get("error") or _error_message(proc))
        (out_dir / "runs").mkdir(parents=True, exist_ok=True)
        (out_dir / "runs" / f"{variant.label}.stderr.txt").write_text(proc.stderr, encoding="utf-8")
        return row
    train = summary["train"]
    row.update(
        status="completed",
        lr=train["lr"],
        trainable_params=summary["trainable_params"],
        trainable_pct=100 * summary["trainable_params"] / summary["total_params"],
        peak_rss_mb=train["peak_rss_mb"],
        peak_gpu_mb=train.get("peak_gpu_mb"),
        train_s=train["wall_s"],
        samples_per_s=train["samples_per_s"],
        steps=train["steps"],
        saved_mb=_dir_mb(run_dir / "final"),
        before=summary["eval_before"],
        after=summary["eval_after"],
    )
    return row


def _error_message(proc: subprocess.CompletedProcess) -> str:
    # The CLI prints "error: <problem> <fix>" last; keep that paragraph on one line.
    lines = [line.strip() for line in proc.stderr.strip().splitlines() if line.strip()]
    starts = [i for i, line in enumerate(lines) if line.startswith("error:")]
    text = " ".join(lines[starts[-1]:] if starts else lines[-3:]) or f"exit code {proc.returncode}"
    return text.removeprefix("error: ")[:400]


def headline_metric(config: RecipeConfig) -> str:
    """The task's headline metric (the registry's), which the table and charts compare on."""
    return spec_for(config).headline


def compare(recipe: Path, config: RecipeConfig, variants: list[Variant], out_dir: Path, overrides: list[str],
            keep_lr: bool = False, show_progress: bool = True, log=print) -> list[dict]:
    """Run every variant and write the table, CSV, JSON and charts to ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    bar = tqdm(variants, desc="compare", unit="run", disable=not show_progress)
    for variant in bar:
        bar.set_postfix_str(variant.label)
        row = run_variant(recipe, variant, out_dir, overrides, keep_lr, config)
        rows.append(row)
        log(_progress_line(row, headline_metric(config)))
        # Written after every run: an interrupted comparison keeps what it measured.
        write_outputs(rows, config, out_dir)
    bar.close()
    return rows


def _progress_line(row: dict, metric: str) -> str:
    if row["status"] != "completed":
        return f"{row['label']}: failed: {row['error']}"
    return (f"{row['label']}: {metric} {row['before'][metric]:.4f} -> {row['after'][metric]:.4f}, "
            f"{row['trainable_pct']:.3f}% trainable, {row['train_s']:.0f} s, peak RSS {row['peak_rss_mb']:.0f} MB")


COLUMNS = [
    ("label", "variant", "{}"),
    ("trainable_params", "trainable params", "{:,}"),
    ("trainable_pct", "trainable %", "{:.3f}"),
    ("lr", "lr", "{:g}"),
    ("peak_rss_mb", "peak RSS MB", "{:.0f}"),
    ("train_s", "train s", "{:.1f}"),
    ("samples_per_s", "samples/s", "{:.1f}"),
    ("saved_mb", "saved MB", "{:.2f}"),
]


def _cells(row: dict, metric: str) -> list[str]:
    if row["status"] != "completed":
        return [row["label"]] + ["–"] * (len(COLUMNS) - 1) + ["–", "–", f"failed: {row['error']}"]
    cells = [fmt.format(row[key]) if row.get(key) is not None else "–" for key, _, fmt in COLUMNS]
    before, after = row["before"][metric], row["after"][metric]
    return cells + [f"{before:.4f}", f"{after:.4f}", f"{after - before:+.4f}"]


def write_outputs(rows: list[dict], config: RecipeConfig, out_dir: Path) -> None:
    metric = headline_metric(config)
    header = [title for _, title, _ in COLUMNS] + [f"{metric} before", f"{metric} after", "change"]
    (out_dir / "compare.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
    with (out_dir / "compare.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(_cells(r, metric) for r in rows)
    lines = [f"# Method comparison: {config.name} ({config.task}, {config.model.name})", ""]
    for group in ("methods", "rank-study"):
        subset = [r for r in rows if r["group"] == group]
        if not subset:
            continue
        lines += [f"## {'Methods' if group == 'methods' else 'LoRA rank study (alpha = 2r)'}", "",
                  "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(_cells(r, metric)) + " |" for r in subset]
        lines.append("")
    (out_dir / "compare.md").write_text("\n".join(lines), encoding="utf-8")
    plot_comparison([r for r in rows if r["group"] == "methods"], metric, out_dir / "compare.png")
    plot_rank_study([r for r in rows if r["group"] == "rank-study"], metric, out_dir / "rank_study.png")


def plot_comparison(rows: list[dict], metric: str, path: Path) -> None:
    """Bar charts: metric after, trainable %, peak RSS, train time, samples/s, saved size.

    Every axis is linear and starts at zero, so bar heights compare honestly (a log axis made
    30 s against 23 s look like 10x); each bar carries its value, so the small ones stay
    readable.
    """
    done = [r for r in rows if r["status"] == "completed"]
    if not done:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(lambda r: r["after"][metric], f"{metric} after"), (lambda r: r["trainable_pct"], "trainable %"),
              (lambda r: r["peak_rss_mb"], "peak RSS (MB)"), (lambda r: r["train_s"], "train time (s)"),
              (lambda r: r["samples_per_s"], "samples/s"), (lambda r: r["saved_mb"] or 0, "saved size (MB)")]
    labels = [r["label"] for r in done]
    fig, axes = plt.subplots(2, 3, figsize=(15, 7.5))
    for ax, (value, title) in zip(axes.flat, panels):
        bars = ax.bar(range(len(done)), [value(r) for r in done], color="#4c72b0")
        ax.bar_label(bars, fmt="%.3g", fontsize=7)
        ax.set_title(title)
        ax.set_xticks(range(len(done)), labels, rotation=60, ha="right", fontsize=8)
        ax.set_ylim(bottom=0)
        ax.grid(axis="y", alpha=0.3)
    before = done[0]["before"][metric]
    axes.flat[0].axhline(before, color="gray", linestyle="--", label="before")
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_rank_study(rows: list[dict], metric: str, path: Path) -> None:
    """Metric after training against LoRA rank, one line per set of adapted matrices."""
    done = [r for r in rows if r["status"] == "completed"]
    if not done:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for tag, name in (("q", "W_q only"), ("qv", "W_q + W_v")):
        points = sorted((r["r"], r["after"][metric]) for r in done if r.get("targets") == tag)
        if points:
            ax.plot(*zip(*points), "o-", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("LoRA rank r")
    ax.set_ylabel(f"{metric} after")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
