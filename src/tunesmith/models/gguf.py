"""GGUF files turned into plain Hugging Face folders, once, in the user cache.

Training and PEFT need ordinary float weights, so a ``*.gguf`` model (a user's file or
the builtin SmolLM2) is dequantized into an fp32 safetensors folder with its tokenizer
and chat template, built atomically by :func:`tunesmith.storage.build_cached_dir` and
reused by every later run.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any

import torch

from tunesmith.errors import ModelError
from tunesmith.paths import cache_root
from tunesmith.storage import build_cached_dir

__all__ = ["cached_conversion", "convert_gguf", "convert_gguf_file"]


# --------------------------------------------------------------------------------------
# Cached conversions


def convert_gguf_file(path: Path) -> Path:
    """The cached Hugging Face folder for a user's ``*.gguf`` file, converting it once.

    The folder is ``cache_root()/models/gguf-<stem>-<hash of path, size and mtime>``.
    """
    # Keyed by where the file is and its size/mtime, so replacing the file (e.g. a new
    # download under the same name) produces a fresh conversion instead of a stale one.
    path = path.resolve()
    st = path.stat()
    key = f"{path}\0{st.st_size}\0{st.st_mtime_ns}".encode()
    digest = hashlib.sha256(key).hexdigest()[:10]
    stem = re.sub(r"[^\w.-]+", "_", path.stem)[:60]
    return cached_conversion(path, cache_root() / "models" / f"gguf-{stem}-{digest}")


def cached_conversion(gguf_path: Path, target: Path) -> Path:
    """``target``, first filled with the conversion of ``gguf_path`` unless already complete.

    The marker records the source path, size and mtime; the user is told once, on
    stderr, that a conversion is running and about how long it takes.
    """
    st = gguf_path.stat()
    info = {
        "source": str(gguf_path.resolve()),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
    }

    def build(tmp_dir: Path) -> None:
        estimate = _estimate_conversion_seconds(st.st_size)
        print(
            f"Converting {gguf_path.name} once into {target} (about {estimate} s)...",
            file=sys.stderr,
            flush=True,
        )
        convert_gguf(gguf_path, tmp_dir)

    return build_cached_dir(target, build, info)


def _estimate_conversion_seconds(size_bytes: int) -> int:
    # Measured on a 2-core CPU: ~40 s for the 98 MB SmolLM2 Q4_1 file, dominated by
    # loading transformers/gguf, dequantizing and writing fp32 weights. Rounded to tens:
    # it only tells the user whether to wait or get coffee.
    seconds = 10 + size_bytes / 1e6 * 0.3
    return int(max(10, round(seconds, -1)))


# --------------------------------------------------------------------------------------
# GGUF -> Hugging Face folder


def convert_gguf(gguf_path: str | Path, out_dir: str | Path) -> None:
    """Dequantize a GGUF file into a plain fp32 Hugging Face folder at ``out_dir``.

    The folder holds ``model.safetensors``, ``config.json`` (without any quantization
    settings), ``generation_config.json`` and the tokenizer with its chat template, so it
    loads with ordinary ``from_pretrained`` and can be trained like any other model.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path).resolve()
    out_dir = Path(out_dir)
    folder, fname = str(gguf_path.parent), gguf_path.name

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=fname)
        quantized = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=fname, dtype=torch.float32, **_dequantize_kwargs()
        )
    except (OSError, ValueError, KeyError, NotImplementedError) as exc:
        raise ModelError(
            f"Could not read GGUF file '{gguf_path}': {exc}",
            "Make sure it is a complete GGUF file of an architecture transformers supports "
            "(e.g. llama, qwen2, mistral), and that the 'gguf' package is installed.",
        ) from exc

    # Rebuild the model from a cleaned config instead of saving the loaded one: the
    # loaded model carries a GGUF quantizer (save_pretrained refuses it as "not
    # serializable") and config.quantization_config, which would make every later load
    # look for GGUF blocks. Rebuilding leaves no trace of either.
    config = quantized.config
    for attr in _QUANTIZATION_ATTRS:
        # Only instance attributes: some have class-level defaults that must stay.
        if attr in vars(config):
            delattr(config, attr)
    config.dtype = torch.float32
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    # strict=True: every weight must come across. With tied embeddings (SmolLM2) the
    # state dict holds lm_head.weight as an alias of embed_tokens.weight; tie again after
    # loading so the saved model keeps one shared matrix.
    model.load_state_dict(quantized.state_dict(), strict=True)
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    model.generation_config = quantized.generation_config
    del quantized

    # The chat template normally comes across with the tokenizer; fall back to the GGUF
    # metadata, where llama.cpp keeps it as tokenizer.chat_template.
    if not getattr(tokenizer, "chat_template", None):
        template = _gguf_chat_template(gguf_path)
        if template:
            tokenizer.chat_template = template

    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    _strip_quantization_from_config_file(out_dir / "config.json")


# Attributes that from_pretrained(gguf_file=...) leaves on the config, and that would make
# the converted folder load as a quantized (GGUF) model again.
_QUANTIZATION_ATTRS = ("quantization_config", "_pre_quantization_dtype", "_is_quantized")


def _dequantize_kwargs() -> dict[str, Any]:
    # Newer transformers can keep GGUF weights packed (when the `kernels` package is
    # present); we need plain dense weights to save and train, so ask for dequantizing.
    try:
        from transformers import GgufConfig
    except ImportError:  # older transformers always dequantize
        return {}
    try:
        return {"quantization_config": GgufConfig(dequantize=True)}
    except TypeError:
        return {}


def _strip_quantization_from_config_file(config_file: Path) -> None:
    # Belt and braces: whatever the in-memory config did, the file on disk must describe a
    # plain float model.
    data = json.loads(config_file.read_text())
    changed = False
    for attr in _QUANTIZATION_ATTRS:
        if attr in data:
            del data[attr]
            changed = True
    if changed:
        config_file.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _gguf_chat_template(gguf_path: Path) -> str | None:
    from gguf import GGUFReader

    reader = GGUFReader(str(gguf_path))
    field = reader.fields.get("tokenizer.chat_template")
    if field is None:
        return None
    value = field.contents() if hasattr(field, "contents") else None
    if isinstance(value, str):
        return value
    return bytes(field.parts[field.data[0]]).decode("utf-8")
