"""``tunesmith data audit RECIPE``: find probably mislabelled training rows with cleanlab.

Out-of-fold class probabilities come from a quick model: a logistic-regression probe on the
recipe's base model's frozen, mean-pooled embeddings, fitted k times on k-1 folds (every row
is scored by a probe that never saw it). cleanlab's ``find_label_issues`` ranks the rows
whose given label those probabilities contradict. Nothing changes silently: the suspects go
to ``label_issues.jsonl`` (file, line, given and suggested label, confidence); ``--fix drop``
or ``--fix relabel`` writes cleaned copies of the sources plus ``audit_log.jsonl`` naming
every row it dropped or relabelled.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from tunesmith.data.sources import load_records
from tunesmith.errors import ConfigError
from tunesmith.jsonl import write_jsonl

FIXES = ("drop", "relabel")
_LINE = re.compile(r"(?:line|index) (\d+)$")


def training_rows(config, base_dir: Path | None) -> list[dict]:
    """The recipe's classification training rows, each with its source ``file`` and ``line``."""
    if config.task != "classification":
        raise ConfigError(f"data audit checks classification labels; this recipe's task is {config.task}.",
                          "Audit a classification recipe.")
    rows = []
    for source in config.data.train:
        records = load_records(source.path, "classification", base_dir=base_dir, text_field=config.data.text_field,
                               label_field=config.data.label_field, on_error="drop", rejects=[])
        for number, record in enumerate(records, start=1):
            found = _LINE.search(record.get("_where", ""))
            rows.append({"file": source.path, "line": int(found.group(1)) if found else number,
                         "text": record["text"], "label": record["label"]})
    return rows


def embed(texts: list[str], model_name: str, max_length: int, batch_size: int = 64) -> np.ndarray:
    """Mean-pooled last hidden states of the base model (frozen), one row per text."""
    import torch
    from transformers import AutoModel

    from tunesmith.models.load import load_tokenizer, resolve_model_source

    source = resolve_model_source(model_name)
    tokenizer = load_tokenizer(model_name)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModel.from_pretrained(source).eval()
    out = []
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths: less padding
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            enc = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=max_length,
                            return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out.append(((hidden * mask).sum(1) / mask.sum(1)).float().numpy())
    vectors = np.concatenate(out)
    restored = np.empty_like(vectors)
    restored[np.array(order)] = vectors
    return restored


def out_of_fold_probs(features: np.ndarray, labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Class probabilities of each row from a probe fitted on the other folds."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, C=0.5))
    splits = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return cross_val_predict(probe, features, labels, cv=splits, method="predict_proba")


def audit(config, base_dir: Path | None, folds: int = 5) -> tuple[list[dict], list[dict]]:
    """``(rows, issues)``: the training rows and the suspects, most suspicious first, each
    with ``file``, ``line``, ``text``, ``given``, ``suggested``, ``confidence`` (the probe's
    probability of the suggested label) and ``given_prob``."""
    from cleanlab.filter import find_label_issues

    rows = training_rows(config, base_dir)
    names = sorted({r["label"] for r in rows})
    if len(names) < 2:
        raise ConfigError("data audit needs at least two labels in the training data.")
    labels = np.array([names.index(r["label"]) for r in rows])
    smallest = int(np.bincount(labels).min())
    if smallest < folds:
        raise ConfigError(f"The rarest label has {smallest} rows; {folds}-fold scoring needs at least {folds}.",
                          "Pass a smaller --folds, or add rows of that label.")
    features = embed([r["text"] for r in rows], config.model.name, config.data.max_length)
    probs = out_of_fold_probs(features, labels, folds, config.seed)
    # n_jobs=1: no worker pool left behind in the calling process (a later fork could deadlock on it).
    ranked = find_label_issues(labels, probs, return_indices_ranked_by="self_confidence", n_jobs=1)
    issues = []
    for i in ranked:
        best = int(probs[i].argmax())
        issues.append({"file": rows[i]["file"], "line": rows[i]["line"], "text": rows[i]["text"],
                       "given": rows[i]["label"], "suggested": names[best], "confidence": round(float(probs[i, best]), 4),
                       "given_prob": round(float(probs[i, labels[i]]), 4)})
    return rows, issues


def write_audit(rows: list[dict], issues: list[dict], out: Path, fix: str | None) -> dict:
    """``label_issues.jsonl`` in ``out``; with ``fix``, a cleaned copy of each source
    (``<stem>.cleaned.jsonl``, text/label rows) and ``audit_log.jsonl`` (one line per change)."""
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "label_issues.jsonl", issues)
    written = {"issues": str(out / "label_issues.jsonl")}
    if fix is None:
        return written
    if fix not in FIXES:
        raise ConfigError(f"--fix {fix!r}: use one of {', '.join(FIXES)}.")
    suspect = {(i["file"], i["line"]): i for i in issues}
    log, by_file = [], {}
    for row in rows:
        issue = suspect.get((row["file"], row["line"]))
        kept = {"text": row["text"], "label": row["label"]}
        if issue is not None:
            log.append({"file": row["file"], "line": row["line"], "action": fix, "from": row["label"],
                        "to": issue["suggested"] if fix == "relabel" else None, "confidence": issue["confidence"]})
            if fix == "drop":
                continue
            kept["label"] = issue["suggested"]
        by_file.setdefault(row["file"], []).append(kept)
    for source, kept_rows in by_file.items():
        stem = Path(source.removeprefix("builtin:")).stem
        path = out / f"{stem}.cleaned.jsonl"
        write_jsonl(path, kept_rows)
        written[source] = str(path)
    write_jsonl(out / "audit_log.jsonl", log)
    written["log"] = str(out / "audit_log.jsonl")
    return written


def format_issues(issues: list[dict], total: int, top: int = 15) -> str:
    """The terminal table: how many suspects, then the most suspicious rows."""
    lines = [f"{len(issues)} of {total} training rows look mislabelled ({100 * len(issues) / max(total, 1):.1f}%)"]
    if issues:
        lines.append(f"{'file:line':34s} {'given':>10s} {'suggested':>10s} {'conf.':>6s}  text")
        for issue in issues[:top]:
            where = f"{issue['file']}:{issue['line']}"[-34:]
            lines.append(f"{where:34s} {issue['given']:>10s} {issue['suggested']:>10s} {issue['confidence']:6.2f}  "
                         f"{issue['text'][:60]}")
    return "\n".join(lines)
