"""Exact and near-duplicate removal, and the train/eval leakage check.

Exact duplicates share a normalised text (NFKC, case-folded, whitespace collapsed).
Near duplicates are found with MinHash LSH (``datasketch``) over character n-grams, so
the same check works for Chinese, which has no spaces between words. The first
occurrence is kept.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from functools import lru_cache

from tunesmith.data.clean import PREFERENCE_FIELDS, UNPAIRED_FIELDS, row_text
from tunesmith.data.progress import progress

_SPACE = re.compile(r"\s+")
NUM_PERM = 64


def normalised(text: str) -> str:
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def _turns_key(messages: list[dict]) -> str:
    return "\x1e".join(f"{m['role']}\x1f{normalised(m['content'])}" for m in messages)


def row_key(row: dict) -> str:
    """Exact-duplicate key: the normalised texts of the row, with each chat turn's role.

    Chats key on their turns; preference rows on prompt + chosen + rejected (the same
    prompt with another pair of answers is another row); sentence pairs on both texts.
    """
    if "messages" in row:
        text = _turns_key(row["messages"])
    elif "chosen" in row or "completion" in row:
        text = "\x1d".join(_turns_key(row[k]) if isinstance(row[k], list) else normalised(row[k])
                           for k in PREFERENCE_FIELDS + UNPAIRED_FIELDS if k in row)
        if "label" in row:  # the same answer judged both ways is two rows
            text += f"\x1d{row['label']}"
    else:
        text = "\x1d".join(normalised(row[k]) for k in ("text", "text_pair") if k in row)
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


@lru_cache(maxsize=1)
def _template():
    from datasketch import MinHash

    return MinHash(num_perm=NUM_PERM)


def minhash(text: str, ngram: int):
    """MinHash signature of the text's character n-grams."""
    from datasketch import MinHash

    text = normalised(text)
    grams = {text[i : i + ngram] for i in range(max(1, len(text) - ngram + 1))}
    # Sharing one set of permutations: building them is 3/4 of the cost of a fresh MinHash.
    template = _template()
    m = MinHash(num_perm=NUM_PERM, permutations=template.permutations, scheme=template.scheme)
    m.update_batch([g.encode("utf-8") for g in grams])
    return m


def _example(row: dict, limit: int = 120) -> str:
    text = row_text(row).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def deduplicate(rows: list[dict], cfg) -> tuple[list[dict], dict]:
    """Drop exact (and with ``cfg.near``, near) duplicates; returns ``(kept, report)``."""
    kept, seen, examples = [], {}, []
    exact = near = 0
    lsh = None
    if cfg.near:
        from datasketch import MinHashLSH

        lsh = MinHashLSH(threshold=cfg.threshold, num_perm=NUM_PERM)
    for i, row in enumerate(progress(rows, "dedup")):
        key = row_key(row)
        if cfg.exact and key in seen:
            exact += 1
            if len(examples) < 5:
                examples.append({"kind": "exact", "kept": _example(kept[seen[key]]), "dropped": _example(row)})
            continue
        if lsh is not None:
            signature = minhash(row_text(row), cfg.ngram)
            match = lsh.query(signature)
            if match:
                near += 1
                if len(examples) < 10:
                    examples.append({"kind": "near", "kept": _example(kept[int(match[0])]), "dropped": _example(row)})
                continue
            lsh.insert(str(len(kept)), signature)
        seen.setdefault(key, len(kept))
        kept.append(row)
    return kept, {"rows_in": len(rows), "exact_duplicates": exact, "near_duplicates": near,
                  "rows_out": len(kept), "examples": examples}


def leakage_summary(report: dict) -> str:
    """One sentence about a leakage report, with up to two examples (the same words in
    ``train``'s warning, ``data inspect`` and the error of ``data.leakage: error``)."""
    count = report["exact"] + report["near"]
    text = (f"{count} of the {report['eval_rows']} eval rows also occur in the training sources "
            f"({report['exact']} exact, {report['near']} near duplicates)")
    if report.get("removed"):
        text += f"; {report['removed']} removed from eval (data.leakage: remove)"
    examples = "; ".join(repr(e) for e in report.get("examples", [])[:2])
    return text + (f", e.g. {examples}" if examples else "")


def leakage(train: list[dict], evaluation: list[dict], near: bool, threshold: float, ngram: int) -> tuple[list[int], dict]:
    """Eval rows that also occur in train (exactly, or nearly with ``near``).

    Returns ``(indices of leaked eval rows, report)``.
    """
    train_keys = {row_key(r) for r in train}
    leaked = {i for i, r in enumerate(evaluation) if row_key(r) in train_keys}
    exact = len(leaked)
    if near and evaluation:
        from datasketch import MinHashLSH

        lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM)
        for j, row in enumerate(train):
            lsh.insert(str(j), minhash(row_text(row), ngram))
        for i, row in enumerate(evaluation):
            if i not in leaked and lsh.query(minhash(row_text(row), ngram)):
                leaked.add(i)
    indices = sorted(leaked)
    return indices, {"eval_rows": len(evaluation), "exact": exact, "near": len(indices) - exact,
                     "examples": [_example(evaluation[i]) for i in indices[:5]]}
