"""``tunesmith data inspect`` and ``data prepare``: what the data stage would do, explained.

Inspect never stops at the first problem: invalid rows are quarantined and counted,
duplicates and leakage are measured even when the recipe does not remove them, and the
lengths are counted with the recipe model's own tokenizer.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from tunesmith.config.schema import DedupConfig
from tunesmith.data.clean import row_text
from tunesmith.data.dedup import deduplicate, leakage_summary
from tunesmith.data.pipeline import PreparedData, prepare_data, validation_info
from tunesmith.data.sources import load_records
from tunesmith.errors import DataError
from tunesmith.jsonl import write_jsonl
from tunesmith.objectives.tasks import spec_for

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


def _word_count(text: str) -> int:
    # Without a tokenizer: words, with each CJK character counted as one.
    return len(_CJK.sub(" x ", text).split())


def length_stats(rows: list[dict], tokenizer=None, max_length: int | None = None) -> dict:
    """Length percentiles of ``rows`` in tokens (or words without a tokenizer)."""
    import numpy as np

    texts = [row_text(r) for r in rows]
    if tokenizer is not None:
        lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]] if texts else []
    else:
        lengths = [_word_count(t) for t in texts]
    if not lengths:
        return {"unit": "tokens" if tokenizer else "words", "count": 0}
    arr = np.array(lengths)
    stats = {"unit": "tokens" if tokenizer else "words", "count": len(lengths), "mean": round(float(arr.mean()), 1),
             **{f"p{p}": int(np.percentile(arr, p)) for p in (50, 90, 99)}, "max": int(arr.max()),
             "lengths": lengths}
    if max_length:
        stats["over_max_length"] = int((arr > max_length).sum())
        stats["max_length"] = max_length
    return stats


def _rejects_by_reason(rejects: list[dict], examples: int = 3) -> dict:
    out: dict[str, dict] = {}
    for r in rejects:
        for code in r["codes"]:
            entry = out.setdefault(code, {"count": 0, "examples": []})
            entry["count"] += 1
            if len(entry["examples"]) < examples:
                entry["examples"].append(f"{r['source']} {r['where']}: {'; '.join(r['reasons'])}")
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["count"]))


def inspect_recipe(config, base_dir: Path | None) -> tuple[dict, PreparedData]:
    """The data report of a recipe: counts, rejects, duplicates, leakage, balance, lengths."""
    from tunesmith.models.load import load_tokenizer

    data_cfg = config.data.model_copy(update={"on_error": "quarantine", "max_drop_fraction": 1.0})
    data = prepare_data(data_cfg, spec_for(config).shape, config.seed, base_dir)
    try:
        tokenizer = load_tokenizer(config.model.name)
    except Exception:  # noqa: BLE001 - a report without token counts beats no report
        tokenizer = None
    _, duplicates = deduplicate(data.train, DedupConfig(exact=True, near=True))
    report = {
        "task": config.task,
        "sources": data.info["sources"],
        "validation": validation_info(data.rejects, data.info["validation"]["valid"], config.data.on_error),
        "rejects_by_reason": _rejects_by_reason(data.rejects),
        "train_rows": len(data.train),
        "eval_rows": len(data.eval),
        "duplicates_in_train": duplicates,
        "leakage": data.info.get("leakage"),
        "labels": data.info.get("label_counts"),
        "mix": data.info.get("mix"),
        "clean": data.info.get("clean"),
        "lengths": {"train": length_stats(data.train, tokenizer, config.data.max_length),
                    "eval": length_stats(data.eval, tokenizer, config.data.max_length)},
    }
    return report, data


def inspect_file(path: str, shape: str | None = None) -> dict:
    """The report of one data file (its shape guessed when not given)."""
    shapes = [shape] if shape else ["classification", "chat"]
    last_error = None
    for candidate in shapes:
        rejects: list[dict] = []
        try:
            rows = load_records(path, candidate, on_error="quarantine", rejects=rejects)
        except DataError as exc:
            last_error = exc
            continue
        _, duplicates = deduplicate(rows, DedupConfig(exact=True, near=True))
        report = {"file": path, "shape": candidate, "validation": validation_info(rejects, len(rows), "inspect"),
                  "rejects_by_reason": _rejects_by_reason(rejects), "duplicates": duplicates,
                  "lengths": {"rows": length_stats(rows)}}
        if candidate == "classification":
            counts: dict[str, int] = {}
            for r in rows:
                counts[r["label"]] = counts.get(r["label"], 0) + 1
            report["labels"] = {"all": dict(sorted(counts.items()))}
        return report
    raise last_error


def write_report(report: dict, out_dir: Path) -> None:
    """``data_report.json`` and ``lengths.png`` (a histogram per split) in ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    splits = {name: stats for name, stats in report["lengths"].items() if stats.get("count")}
    if splits:
        fig, axes = plt.subplots(1, len(splits), figsize=(5 * len(splits), 3.2), squeeze=False)
        for ax, (name, stats) in zip(axes[0], splits.items()):
            ax.hist(stats["lengths"], bins=40, color="#4c72b0")
            if stats.get("max_length"):
                ax.axvline(stats["max_length"], color="#c44e52", linestyle="--", label=f"max_length {stats['max_length']}")
                ax.legend()
            ax.set_title(f"{name}: {stats['count']} rows, p50 {stats['p50']}, p99 {stats['p99']}")
            ax.set_xlabel(stats["unit"])
            ax.set_ylabel("rows")
        fig.tight_layout()
        fig.savefig(out_dir / "lengths.png", dpi=110)
        plt.close(fig)
    slim = json.loads(json.dumps(report, default=str))
    for stats in slim["lengths"].values():
        stats.pop("lengths", None)
    (out_dir / "data_report.json").write_text(json.dumps(slim, indent=2, ensure_ascii=False), encoding="utf-8")


def format_report(report: dict) -> str:
    """The report as a few readable lines for the terminal."""
    v = report["validation"]
    lines = [f"rows read {v['rows_read']}, valid {v['valid']}, rejected {v['rejected']}"]
    for code, entry in report["rejects_by_reason"].items():
        lines.append(f"  {code}: {entry['count']}")
        lines += [f"    {example}" for example in entry["examples"]]
    if "train_rows" in report:
        lines.append(f"train {report['train_rows']} / eval {report['eval_rows']} rows")
    dup = report.get("duplicates_in_train") or report.get("duplicates")
    lines.append(f"duplicates: {dup['exact_duplicates']} exact, {dup['near_duplicates']} near")
    if report.get("leakage"):
        lines.append(f"leakage: {leakage_summary(report['leakage'])}")
    for split, counts in (report.get("labels") or {}).items():
        lines.append(f"labels {split}: " + ", ".join(f"{k} {n}" for k, n in (counts.items() if isinstance(counts, dict) else [])))
    for split, stats in report["lengths"].items():
        if stats.get("count"):
            over = f", {stats['over_max_length']} over max_length {stats['max_length']}" if "max_length" in stats else ""
            lines.append(f"lengths {split} ({stats['unit']}): p50 {stats['p50']}, p90 {stats['p90']}, "
                         f"p99 {stats['p99']}, max {stats['max']}{over}")
    return "\n".join(lines)


def prepare_to_folder(config, base_dir: Path | None, out_dir: Path) -> dict:
    """Run the recipe's data stage and write what training would see: ``train.jsonl``,
    ``eval.jsonl``, ``rejects.jsonl`` (when any), ``data_report.json``, ``lengths.png``."""
    data = prepare_data(config.data, spec_for(config).shape, config.seed, base_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(out_dir / "train.jsonl", data.train, drop_private=True)
    write_jsonl(out_dir / "eval.jsonl", data.eval, drop_private=True)
    if data.test:
        write_jsonl(out_dir / "test.jsonl", data.test, drop_private=True)
    if data.rejects:
        write_jsonl(out_dir / "rejects.jsonl", data.rejects, drop_private=True)
    report = {"task": config.task, **data.info,
              "lengths": {"train": length_stats(data.train), "eval": length_stats(data.eval)}}
    write_report(report, out_dir)
    return report
