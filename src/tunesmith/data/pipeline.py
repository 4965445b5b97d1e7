"""The data stage: read sources, mix, split, subsample, check labels -> train/eval records."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tunesmith.data.augment import augment_rows
from tunesmith.data.clean import clean_rows
from tunesmith.data.dedup import deduplicate, leakage, leakage_summary
from tunesmith.data.mix import mix_sources
from tunesmith.data.preference_rows import expand_pairs
from tunesmith.data.sources import load_records
from tunesmith.data.split import split_records, subsample
from tunesmith.errors import DataError


@dataclass
class PreparedData:
    train: list[dict]
    eval: list[dict]
    labels: list[str] | None  # classification only, in id order
    info: dict = field(default_factory=dict)  # counts for the summary/report
    rejects: list[dict] = field(default_factory=list)  # invalid rows left out (drop/quarantine)
    test: list[dict] = field(default_factory=list)  # held out from training and evaluation (data.test_size)


def _read(sources, cfg, shape: str, base_dir: Path | None, rejects: list[dict],
          info: dict) -> tuple[list[list[dict]], int]:
    """Each source's validated rows (rejects collected; pairs made, counted in ``info``) and
    how many valid rows were read (before ranked lists and ratings became pairs)."""
    parts, valid = [], 0
    for source in sources:
        bad: list[dict] = []
        keep = tuple(f for f in (cfg.time_field if cfg.split_by == "time" else None,
                                 cfg.group_field if cfg.split_by == "group" else None) if f)
        rows = load_records(source.path, shape, base_dir=base_dir, text_field=cfg.text_field,
                            label_field=cfg.label_field, on_error=cfg.on_error, rejects=bad, keep_fields=keep,
                            text_delimiter=cfg.text_delimiter, messages_field=cfg.messages_field,
                            rejected_optional=cfg.generate_rejected is not None)
        if shape == "classification" and cfg.labels and cfg.on_error != "raise":
            # With a given label set, a row with another label is an invalid row like any other.
            rows = _reject_unknown_labels(rows, cfg.labels, bad)
        _check_drop_fraction(source.path, len(rows), bad, cfg.max_drop_fraction)
        rejects.extend(bad)
        valid += len(rows)
        if shape == "preference":  # ranked lists and ratings become pairs
            rows, made = expand_pairs(rows, cfg.min_gap)
            if made["pairs_from_rankings"] or made["pairs_from_ratings"]:
                info[source.path] = made
        parts.append(rows)
    return parts, valid


def _check_drop_fraction(source: str, valid: int, bad: list[dict], limit: float) -> None:
    total = valid + len(bad)
    if total and len(bad) / total > limit:
        examples = "; ".join(f"{r['where']}: {r['reasons'][0]}" for r in bad[:3])
        raise DataError(
            f"{source}: {len(bad)} of {total} rows ({100 * len(bad) / total:.1f}%) are invalid, more than "
            f"data.max_drop_fraction={limit} allows ({examples}).",
            "Fix the file (data.on_error: raise lists every bad row), or raise data.max_drop_fraction.",
        )


def _deduplicate_parts(parts: list[list[dict]], cfg) -> tuple[list[list[dict]], dict]:
    """Deduplicate across all sources at once (a row repeated in two sources is a duplicate
    too), then hand each source its surviving rows."""
    tagged = [dict(row, _part=k) for k, rows in enumerate(parts) for row in rows]
    kept, report = deduplicate(tagged, cfg)
    out: list[list[dict]] = [[] for _ in parts]
    for row in kept:
        out[row.pop("_part")].append(row)
    return out, report


def validation_info(rejects: list[dict], valid: int, policy: str) -> dict:
    """Counts for the summary: rows read, kept, rejected, and rejects by reason."""
    by_reason: dict[str, int] = {}
    for reject in rejects:
        for code in reject["codes"]:
            by_reason[code] = by_reason.get(code, 0) + 1
    return {"policy": policy, "rows_read": valid + len(rejects), "valid": valid, "rejected": len(rejects),
            "by_reason": dict(sorted(by_reason.items(), key=lambda kv: -kv[1]))}


def prepare_data(cfg, shape: str, seed: int, base_dir: Path | None = None) -> PreparedData:
    """Build the train and eval record lists described by a DataConfig, for rows of
    ``shape`` (the task's, from the task registry: classification, chat, text, preference).

    Raises:
        DataError: unreadable sources, empty splits, or eval labels outside the label set.
    """
    rejects: list[dict] = []
    pairs_made: dict = {}
    parts, valid = _read(cfg.train, cfg, shape, base_dir, rejects, pairs_made)
    info: dict = {"sources": {s.path: len(rows) for s, rows in zip(cfg.train, parts)}}
    if cfg.clean:
        cleaned = [clean_rows(rows, cfg.clean) for rows in parts]
        parts = [rows for rows, _ in cleaned]
        info["clean"] = {s.path: report for s, (_, report) in zip(cfg.train, cleaned)}
    if cfg.dedup:
        parts, info["dedup"] = _deduplicate_parts(parts, cfg.dedup)
    method = cfg.split_by if cfg.split_by != "auto" else ("stratified" if shape == "classification" else "random")
    test: list[dict] = []
    if cfg.eval:
        eval_parts, eval_valid = _read(cfg.eval, cfg, shape, base_dir, rejects, pairs_made)
        valid += eval_valid
        evaluation = [row for rows in eval_parts for row in rows]
    else:
        # Split each source before mixing: mixing repeats rows of small sources, and a
        # repeated row must never land on both sides of the split.
        splits = [split_records(rows, method=method, eval_size=_share(cfg.eval_size, rows, parts),
                                test_size=_share(cfg.test_size, rows, parts) if cfg.test_size else 0, seed=seed,
                                stratify_field="label", time_field=cfg.time_field, group_field=cfg.group_field)
                  for rows in parts]
        parts = [train for train, _, _ in splits]
        evaluation = [row for _, rows, _ in splits for row in rows]
        test = [row for _, _, rows in splits for row in rows]
        info["split"] = {"method": method, "train": sum(len(p) for p in parts), "eval": len(evaluation),
                         "test": len(test)}
    if cfg.clean and cfg.eval:
        evaluation, info["clean_eval"] = clean_rows(evaluation, cfg.clean)
    # Subsampled before the leakage check, so its counts are about the eval set the run uses.
    evaluation = subsample(evaluation, cfg.max_eval_samples, seed + 1)
    near = bool(cfg.dedup and cfg.dedup.near)
    leaked, info["leakage"] = leakage([r for rows in parts for r in rows], evaluation, near,
                                      cfg.dedup.threshold if near else 0.8, cfg.dedup.ngram if near else 5)
    if cfg.leakage == "error" and leaked:
        raise DataError(leakage_summary(info["leakage"]) + ".",
                        "Deduplicate the sources (data.dedup), give a separate eval file, or set data.leakage: "
                        "remove to drop those eval rows.")
    if cfg.leakage == "remove" and leaked:
        drop = set(leaked)
        evaluation = [r for i, r in enumerate(evaluation) if i not in drop]
        info["leakage"]["removed"] = len(drop)
    if cfg.augment:
        augmented = [augment_rows(rows, cfg.augment, seed + k) for k, rows in enumerate(parts)]
        parts = [rows for rows, _ in augmented]
        info["augment"] = {s.path: report for s, (_, report) in zip(cfg.train, augmented)}
    if cfg.mix_total:
        train, counts = mix_sources(parts, [s.weight for s in cfg.train], cfg.mix_total, seed, cfg.mix_with_replacement)
        info["mix"] = {s.path: n for s, n in zip(cfg.train, counts)}
        # Rows are shared objects, so object identity counts the distinct source rows used.
        drawn = {id(row) for row in train}
        info["mix_unique_rows"] = {s.path: len({id(r) for r in rows} & drawn) for s, rows in zip(cfg.train, parts)}
    else:
        train = [row for rows in parts for row in rows]
    train = subsample(train, cfg.max_train_samples, seed)

    labels = None
    if shape == "classification":
        labels = list(cfg.labels) if cfg.labels else sorted({r["label"] for r in train})
        if len(labels) < 2:
            raise DataError(
                f"The training data has only one label ({labels}); classification needs at least two.",
                "Check data.label_field and the data.",
            )
        _check_labels(train, labels, "training")
        _check_labels(evaluation, labels, "evaluation")
        info["label_counts"] = {
            split: {label: sum(r["label"] == label for r in rows) for label in labels}
            for split, rows in (("train", train), ("eval", evaluation))
        }
    if pairs_made:
        info["pairs_made"] = pairs_made
    info.update(train_rows=len(train), eval_rows=len(evaluation), test_rows=len(test))
    if cfg.on_error != "raise":
        info["validation"] = validation_info(rejects, valid, cfg.on_error)
    return PreparedData(train=train, eval=evaluation, labels=labels, info=info, rejects=rejects, test=test)


def _reject_unknown_labels(rows: list[dict], labels: list[str], rejects: list[dict]) -> list[dict]:
    from tunesmith.data.validate import reject_record

    known, kept = set(labels), []
    for i, row in enumerate(rows):
        if row["label"] in known:
            kept.append(row)
            continue
        source, _, line = row.get("_where", "").rpartition(" line ")
        reason = f"field 'label' value {row['label']!r} is outside the label set {labels}"
        rejects.append(reject_record(source, f"line {line}" if source else f"row {i + 1}", [reason],
                                     {k: v for k, v in row.items() if not k.startswith("_")}))
    return kept


def _share(eval_size: float, rows: list, parts: list[list]) -> float:
    """A row-count eval_size is divided among sources in proportion to their size."""
    if eval_size < 1:
        return eval_size
    return max(1, round(eval_size * len(rows) / sum(len(p) for p in parts)))


def _check_labels(rows: list[dict], labels: list[str], split: str) -> None:
    known = set(labels)
    bad = [(r.get("_where", f"row {i + 1}"), r["label"]) for i, r in enumerate(rows) if r["label"] not in known]
    if bad:
        examples = "; ".join(f"{where}: {label!r}" for where, label in bad[:5])
        raise DataError(
            f"{len(bad)} {split} rows have labels outside the label set {labels} ({examples}).",
            "Add the label to data.labels, or fix/remove those rows.",
        )
