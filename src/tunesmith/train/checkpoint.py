"""Atomic checkpoints: write everything into a temp dir, fsync, manifest last, then one rename.

A directory under ``checkpoints/`` without a valid ``manifest.json`` (present, parsable,
every listed file with its recorded hash) was never finished and is never used.

Layout of ``checkpoints/step-N/``:
- ``model/``: the trainable weights in the library's own format: a PEFT adapter (small)
  for adapter methods, the full model for full/freeze fine-tuning; safetensors.
- ``trainer_state.pt``: optimizer, scheduler, loss-scaler and RNG states; only tensors and
  plain containers, so it loads with ``torch.load(weights_only=True)``.
- ``manifest.json``: step, epoch, data cursor, the loop state, config hash, library
  versions and the sha256 of every file. Written last.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from tunesmith.environment import library_versions
from tunesmith.storage import fsync_tree, sha256_file

MANIFEST = "manifest.json"
def rng_states() -> dict:
    """Python, numpy and torch RNG states as tensors and plain containers (weights_only-safe)."""
    np_state = np.random.get_state()
    states = {
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(run_dir: Path, step: int, model, optimizer, scheduler, state: dict,
                    scaler=None, config_hash: str | None = None, method_state: dict | None = None) -> Path:
    """Write ``checkpoints/step-<step>/`` atomically and return its path."""
    root = run_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step}"
    tmp = root / f".tmp-step-{step}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    model.save_pretrained(tmp / "model", safe_serialization=True)
    if _is_peft(model):
        # PEFT's own format is what inference needs, which is not always what training
        # had: prefix tuning with a projection saves the projected prefixes, not the MLP
        # that produces them. Resuming loads the trainable tensors exactly as they were.
        trainable = {n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad}
        save_file(trainable, tmp / "model" / TRAINABLE_FILE)
    trainer_state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_states()}
    if scaler is not None:
        trainer_state["scaler"] = scaler.state_dict()
    if method_state is not None:  # e.g. AdaLoRA's importance scores
        trainer_state["method"] = method_state
    torch.save(trainer_state, tmp / "trainer_state.pt")
    files = {str(p.relative_to(tmp)): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
    manifest = {"step": step, "epoch": state.get("epoch"), "data_cursor": state.get("cursor"),
                "saved_at": time.time(), "config_hash": config_hash, "versions": library_versions(),
                "state": state, "files": files}
    manifest["manifest_sha256"] = _manifest_digest(manifest)  # an edited step or cursor is caught too
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    fsync_tree(tmp)
    if final.exists():
        _delete_checkpoint(final)
    os.replace(tmp, final)
    fsync_tree(root)
    return final


def read_manifest(path: Path) -> dict:
    return json.loads((path / MANIFEST).read_text())


def _manifest_digest(manifest: dict) -> str:
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def checkpoint_problem(path: Path) -> str | None:
    """Why ``path`` is not a usable checkpoint (None when it is): no or unreadable manifest,
    a manifest edited after it was written or naming another step, a listed file missing or
    changed."""
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        return "no manifest.json (the write did not finish)"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (ValueError, UnicodeDecodeError):
        return "manifest.json is not valid JSON"
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict) or not manifest["files"]:
        return "manifest.json does not list the checkpoint's files"
    if "manifest_sha256" in manifest and manifest["manifest_sha256"] != _manifest_digest(manifest):
        return "manifest.json was edited after it was written"
    number = path.name.removeprefix("step-")
    if number.isdigit() and manifest.get("step") != int(number):
        return f"manifest.json says step {manifest.get('step')!r}, the folder says {path.name}"
    for name, digest in manifest["files"].items():
        target = (path / str(name)).resolve()
        if not target.is_relative_to(path.resolve()) or not target.is_file():
            return f"{name} is missing"
        if sha256_file(target) != digest:
            return f"{name} changed since it was written"
    return None


def is_valid_checkpoint(path: Path) -> bool:
    """True when :func:`checkpoint_problem` finds nothing wrong."""
    return checkpoint_problem(path) is None


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Finished checkpoint dirs (``step-N``), oldest first; temp dirs are not included."""
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-") and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def latest_valid_checkpoint(run_dir: Path, rejected: list[str] | None = None) -> Path | None:
    """The newest checkpoint that passes validation; each newer one skipped is described in
    ``rejected`` ("step-16 rejected: ...")."""
    for path in reversed(list_checkpoints(run_dir)):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        if rejected is not None:
            rejected.append(f"{path.name} rejected: {problem}")
    return None


def _delete_checkpoint(path: Path) -> None:
    """Rename first, then delete: a process killed mid-deletion leaves a temp dir, never a broken step-N."""
    doomed = path.parent / f".tmp-delete-{path.name}-{os.getpid()}"
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def remove_stale_temp_dirs(run_dir: Path) -> None:
    """Delete half-written or half-deleted checkpoints left by a process that died."""
    root = run_dir / "checkpoints"
    if root.is_dir():
        for path in [*root.glob(".tmp-step-*"), *root.glob(".tmp-delete-*")]:
            shutil.rmtree(path, ignore_errors=True)


def prune_checkpoints(run_dir: Path, keep_last_n: int | None, protect: set[int]) -> None:
    """Keep the newest ``keep_last_n`` checkpoints plus the steps in ``protect`` (e.g. the best)."""
    if keep_last_n is None:
        return
    ckpts = list_checkpoints(run_dir)
    for path in ckpts[:-keep_last_n]:
        if int(path.name[5:]) not in protect:
            _delete_checkpoint(path)


TRAINABLE_FILE = "trainable.safetensors"


def _is_peft(model) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def _load_trainable(model, tensors: dict) -> list[str]:
    """Copy saved trainable tensors into ``model``; return the trainable names it lacked."""
    params = dict(model.named_parameters())
    unknown = [n for n in tensors if n not in params]
    if unknown:
        raise RuntimeError(f"checkpoint has tensors the model lacks: {unknown[:5]}")
    with torch.no_grad():
        for name, tensor in tensors.items():
            params[name].copy_(tensor)
    return [n for n, p in params.items() if p.requires_grad and n not in tensors]


def load_checkpoint(path: Path, model, optimizer, scheduler, scaler=None) -> dict:
    """Restore weights, optimizer, scheduler, scaler and RNG states; return the manifest
    (with the method's own state, if one was saved, under ``method_state``)."""
    from peft import PeftModel, set_peft_model_state_dict

    manifest = read_manifest(path)
    model_dir = path / "model"
    if isinstance(model, PeftModel) and (model_dir / TRAINABLE_FILE).is_file():
        missing = _load_trainable(model, load_file(model_dir / TRAINABLE_FILE))
        if missing:
            raise RuntimeError(f"checkpoint {path} lacks trainable tensors: {missing[:5]}")
    elif isinstance(model, PeftModel):
        set_peft_model_state_dict(model, load_file(model_dir / "adapter_model.safetensors"))
    else:
        weights: dict = {}
        for file in sorted(model_dir.glob("*.safetensors")):
            weights.update(load_file(file))
        # Tied weights are saved once; strict=False lets the tied copy stay linked.
        _, unexpected = model.load_state_dict(weights, strict=False)
        if unexpected:
            raise RuntimeError(f"checkpoint {path} has weights the model lacks: {unexpected[:5]}")
    trainer_state = torch.load(path / "trainer_state.pt", weights_only=True)
    optimizer.load_state_dict(trainer_state["optimizer"])
    scheduler.load_state_dict(trainer_state["scheduler"])
    if scaler is not None and "scaler" in trainer_state:
        scaler.load_state_dict(trainer_state["scaler"])
    set_rng_states(trainer_state["rng"])
    manifest["method_state"] = trainer_state.get("method")
    return manifest
