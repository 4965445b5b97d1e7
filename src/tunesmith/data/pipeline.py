"""The data stage: read sources, mix, split, subsample, check labels -> train/eval records."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tunesmith.data.mix import mix_sources
from tunesmith.data.sources import load_records
from tunesmith.data.split import subsample, train_eval_split
from tunesmith.errors import DataError

SHAPE_OF_TASK = {"classification": "classification", "causal_lm": "chat"}


@dataclass
class PreparedData:
    train: list[dict]
    eval: list[dict]
    labels: list[str] | None  # classification only, in id order
    info: dict = field(default_factory=dict)  # counts for the summary/report


def _read(sources, cfg, shape: str, base_dir: Path | None) -> list[list[dict]]:
    return [
        load_records(s.path, shape, base_dir=base_dir, text_field=cfg.text_field, label_field=cfg.label_field)
        for s in sources
    ]


def prepare_data(cfg, task: str, seed: int, base_dir: Path | None = None) -> PreparedData:
    """Build the train and eval record lists described by a DataConfig.

    Raises:
        DataError: unreadable sources, empty splits, or eval labels outside the label set.
    """
    shape = SHAPE_OF_TASK[task]
    parts = _read(cfg.train, cfg, shape, base_dir)
    info: dict = {"sources": {s.path: len(rows) for s, rows in zip(cfg.train, parts)}}
    if cfg.mix_total:
        train, counts = mix_sources(parts, [s.weight for s in cfg.train], cfg.mix_total, seed)
        info["mix"] = {s.path: n for s, n in zip(cfg.train, counts)}
    else:
        train = [row for rows in parts for row in rows]

    if cfg.eval:
        evaluation = [row for rows in _read(cfg.eval, cfg, shape, base_dir) for row in rows]
    else:
        stratify = "label" if task == "classification" else None
        train, evaluation = train_eval_split(train, eval_size=cfg.eval_size, seed=seed, stratify_field=stratify)
    train = subsample(train, cfg.max_train_samples, seed)
    evaluation = subsample(evaluation, cfg.max_eval_samples, seed + 1)

    labels = None
    if task == "classification":
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
    info.update(train_rows=len(train), eval_rows=len(evaluation))
    return PreparedData(train=train, eval=evaluation, labels=labels, info=info)


def _check_labels(rows: list[dict], labels: list[str], split: str) -> None:
    known = set(labels)
    bad = [(i, r["label"]) for i, r in enumerate(rows) if r["label"] not in known]
    if bad:
        examples = ", ".join(f"row {i + 1}: {label!r}" for i, label in bad[:5])
        raise DataError(
            f"{len(bad)} {split} rows have labels outside the label set {labels} ({examples}).",
            "Add the label to data.labels, or fix/remove those rows.",
        )
