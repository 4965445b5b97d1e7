"""Tokenized data cached on disk, keyed by everything that decides it.

The key hashes the data section of the recipe, the task and seed, the content of every
source file, the tokenizer (its full serialised vocabulary and rules), the chat
template and the Tunesmith version. A second run with the same inputs skips reading,
validating, cleaning, deduplicating, splitting and tokenizing; any change misses.
Stored as JSON lines (records) and ``.npz`` arrays (token ids), never as pickles.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from tunesmith.data.pipeline import PreparedData
from tunesmith.jsonl import read_jsonl, write_jsonl
from tunesmith.paths import cache_root
from tunesmith.storage import digest_tree

FORMAT = 1


def _source_digest(spec: str, base_dir: Path | None) -> str:
    if spec.startswith("builtin:"):
        return spec  # fixed data from pinned packages; the Tunesmith version is in the key too
    path = Path(spec.rsplit(":", 1)[0] if not Path(spec).exists() and ":" in spec else spec).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    return digest_tree(path) if path.exists() else f"missing:{path}"


def data_digest(config, base_dir: Path | None) -> str:
    """The content hash of the recipe's data sources (train and eval), 16 hex digits."""
    sources = [s.path for s in config.data.train + (config.data.eval or [])]
    return hashlib.sha256("\x1f".join(_source_digest(s, base_dir) for s in sources).encode()).hexdigest()[:16]


def tokenizer_digest(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    body = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)
    parts = [type(tokenizer).__name__, body, str(tokenizer.chat_template), str(tokenizer.eos_token_id),
             str(tokenizer.pad_token_id), str(tokenizer.padding_side)]
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


def fingerprint(config, base_dir: Path | None, tokenizer) -> str:
    """The cache key of a recipe's prepared and tokenized data."""
    data = config.data
    sources = [s.path for s in data.train] + [s.path for s in data.eval or []]
    key = {
        "format": FORMAT,
        "tunesmith": sys.modules["tunesmith"].__version__,
        "task": config.task,
        # KTO's features are single answers with KL partners, the other losses' are pairs.
        "preference_loss": config.preference.loss if config.task == "preference" else None,
        "seed": config.seed,
        "data": data.model_dump(mode="json"),
        "sources": [_source_digest(s, base_dir) for s in sources],
        "tokenizer": tokenizer_digest(tokenizer),
        # Generated rejections (data.generate_rejected) are the starting model's answers.
        "policy": starting_model_key(config) if data.generate_rejected is not None else None,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


def starting_model_key(config) -> dict:
    """What identifies the model a run starts from (name, dtype, precision, and the
    digest of ``model.adapter_from``'s adapter): the key of what that model computed
    ahead of training -- reference log-probs, generated rejections."""
    key = {"name": config.model.name, "dtype": config.model.dtype, "precision": config.train.precision,
           "eval_batch_size": config.train.eval_batch_size}
    if config.model.adapter_from:
        key["adapter"] = digest_tree(Path(config.model.adapter_from))
    return key


def cache_dir(key: str) -> Path:
    """``$TUNESMITH_DATA_CACHE/<key>``, or ``data/<key>`` in the Tunesmith cache."""
    override = os.environ.get("TUNESMITH_DATA_CACHE")
    return (Path(override) if override else cache_root() / "data") / key


def _pack(features: list[dict]) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    if not features:
        return arrays
    for name in features[0]:
        values = [f[name] for f in features]
        if isinstance(values[0], list):
            lengths = np.array([len(v) for v in values], dtype=np.int64)
            arrays[f"{name}.flat"] = np.fromiter((x for v in values for x in v), dtype=np.int64, count=int(lengths.sum()))
            arrays[f"{name}.offsets"] = np.concatenate([[0], np.cumsum(lengths)])
        else:
            arrays[name] = np.asarray(values, dtype=np.int64)
    return arrays


def _unpack(arrays) -> list[dict]:
    names = {k.split(".")[0] for k in arrays.files}
    columns: dict[str, list] = {}
    for name in names:
        if f"{name}.flat" in arrays.files:
            flat, offsets = arrays[f"{name}.flat"].tolist(), arrays[f"{name}.offsets"].tolist()
            columns[name] = [flat[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]
        else:
            columns[name] = arrays[name].tolist()
    count = len(next(iter(columns.values()))) if columns else 0
    return [{name: columns[name][i] for name in columns} for i in range(count)]


def save(key: str, data: PreparedData, train_features: list[dict], eval_features: list[dict], extra: dict) -> None:
    """Store atomically (a temp folder renamed into place), so a crash never leaves half a cache."""
    target = cache_dir(key)
    if target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        for name in ("train", "eval", "test", "rejects"):
            write_jsonl(tmp / f"{name}.jsonl", getattr(data, name))
        np.savez(tmp / "train_features.npz", **_pack(train_features))
        np.savez(tmp / "eval_features.npz", **_pack(eval_features))
        meta = {"labels": data.labels, "info": data.info, "extra": extra}
        (tmp / "meta.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
        tmp.rename(target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # a cache that cannot be written is only a slower next run


def load(key: str) -> tuple[PreparedData, list[dict], list[dict], dict] | None:
    """``(data, train_features, eval_features, extra)``, or None when nothing (valid) is cached."""
    folder = cache_dir(key)
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        data = PreparedData(train=read_jsonl(folder / "train.jsonl"), eval=read_jsonl(folder / "eval.jsonl"),
                            labels=meta["labels"], info=meta["info"], rejects=read_jsonl(folder / "rejects.jsonl"),
                            test=read_jsonl(folder / "test.jsonl"))
        with np.load(folder / "train_features.npz", allow_pickle=False) as train, \
                np.load(folder / "eval_features.npz", allow_pickle=False) as evaluation:
            return data, _unpack(train), _unpack(evaluation), meta["extra"]
    except (OSError, ValueError, KeyError):
        return None
