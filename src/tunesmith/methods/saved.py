"""Saving a trained model, loading it back, and merging adapters into the base.

What ``final/`` holds depends on the method:
- PEFT methods (LoRA family, IA3, prefix, prompt, P-tuning): the adapter in PEFT's own
  format, loadable with ``PeftModel.from_pretrained(base, final_dir)``;
- full: the whole model, loadable with ``AutoModel*.from_pretrained``;
- freeze, BitFit: only the trained tensors (:mod:`tunesmith.methods.delta`), put back
  onto the base when loaded ("merged" by construction);
- bottleneck adapters: ``adapter_weights.safetensors`` + ``tunesmith_adapter.json``
  (no library format exists for them under our transformers version).
``tunesmith.json`` next to them says which, and names the base model.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from tunesmith.config.methods import method_info
from tunesmith.errors import ConfigError
from tunesmith.methods.delta import load_delta, save_delta
from tunesmith.methods.adapters import is_adapter_model, load_adapters, save_adapters
from tunesmith.methods.lora import save_pissa_as_lora
from tunesmith.methods.prompt import accept_past_key_values
from tunesmith.rundir import read_model_meta, verify_model_folder


def save_trained(model: nn.Module, final_dir: Path, delta: bool = False) -> None:
    """Write ``model``'s trained weights in the format its method calls for (``delta``: only
    the tensors that train, for freeze and BitFit)."""
    final_dir.mkdir(parents=True, exist_ok=True)
    if delta:
        save_delta(model, final_dir)
        return
    if is_adapter_model(model):
        save_adapters(model, final_dir)
        return
    if getattr(model, "tunesmith_pissa_init", None):
        save_pissa_as_lora(model, final_dir)  # a plain LoRA that applies to the original base
    else:
        model.save_pretrained(final_dir, safe_serialization=True)


def load_trained(final_dir: str | Path, *, base_model: str | None = None, full_precision: bool = False):
    """Load a run's ``final/`` folder: returns ``(model, tokenizer, meta)``.

    ``base_model`` overrides the base recorded in ``tunesmith.json`` (e.g. when the run
    was trained on another machine). ``full_precision`` loads a QLoRA adapter onto the
    unquantised base (for merging or exporting).

    Raises:
        ModelError: the folder is not a Tunesmith final model or its base can't be loaded.
    """
    from tunesmith.models.load import load_tokenizer

    final_dir = Path(final_dir)
    verify_model_folder(final_dir)
    meta = read_model_meta(final_dir)
    labels = meta.get("labels")
    id2label = dict(enumerate(labels)) if labels else None
    base = base_model or meta.get("base_model_path") or meta["base_model"]
    model = _load(final_dir, meta, base, id2label, full_precision)
    model.eval()
    return model, load_tokenizer(str(final_dir)), meta


def _load(final_dir: Path, meta: dict, base: str, id2label, full_precision: bool):
    from tunesmith.models.load import load_model
    from tunesmith.models.quantize import four_bit_config

    method, task = meta["method"], meta["task"]
    family = method_info(method).family
    if family == "peft":
        from peft import PeftModel

        # Full fine-tuning saved its enlarged embeddings; an adapter's base is rebuilt as it started.
        load_model = _with_vocab(load_model, meta.get("vocab"))
        quantized = meta.get("quantization") and not full_precision
        quantization = four_bit_config(**meta["quantization"]) if quantized else None
        model, _ = load_model(base, task, id2label=id2label, quantization=quantization)
        if _deep_prompts(meta):
            accept_past_key_values(model, method, task)
        model = PeftModel.from_pretrained(model, final_dir)
    elif family == "own":
        model, _ = load_model(base, task, id2label=id2label)
        model = load_adapters(model, final_dir)
    elif meta.get("weights") == "delta":
        model, _ = load_model(base, task, id2label=id2label)
        model = load_delta(model, final_dir)
    else:
        model, _ = load_model(str(final_dir), task, id2label=id2label)
    return model


def _with_vocab(load_model, vocab: dict | None):
    """``load_model`` that gives the base the enlarged embeddings the run started from."""
    if not vocab:
        return load_model

    def load(*args, **kwargs):
        from tunesmith.models.vocab import rebuild

        model, tokenizer = load_model(*args, **kwargs)
        rebuild(model, vocab)
        return model, tokenizer

    return load


def continue_adapter(model: nn.Module, run: str | Path, method: str, base_path: str) -> dict:
    """Load a finished run's adapter into ``model`` (freshly built with the same method and
    settings), so a new run starts where that one ended; returns the run's ``tunesmith.json``.

    Raises:
        ConfigError: not a run, another method or base, or an adapter of another shape
            (rank, target modules).
    """
    from peft import get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors.torch import load_file

    from tunesmith.rundir import resolve_final_dir

    final_dir, _ = resolve_final_dir(run)
    meta = read_model_meta(final_dir)
    if meta["method"] != method:
        raise ConfigError(f"model.adapter_from: {run} holds a {meta['method']} adapter, and this run trains "
                          f"{method}.", f"Set method.type: {meta['method']} (with that run's settings).")
    if str(Path(meta.get("base_model_path") or "").resolve()) != str(Path(base_path).resolve()):
        raise ConfigError(f"model.adapter_from: {run} was trained on {meta['base_model']}, not on this run's "
                          "base model.", f"Set model.name: {meta['base_model']}.")
    weights = load_file(final_dir / "adapter_model.safetensors")
    expected = set(get_peft_model_state_dict(model))
    if set(weights) != expected:
        raise ConfigError(f"model.adapter_from: the adapter in {final_dir} adapts other modules than this run's "
                          f"method section ({len(set(weights) ^ expected)} tensors differ).",
                          "Use that run's method settings (config.yaml), e.g. the same target_modules.")
    try:
        set_peft_model_state_dict(model, weights)
    except RuntimeError as exc:  # size mismatch: another rank
        raise ConfigError(f"model.adapter_from: the adapter in {final_dir} has other shapes than this run's "
                          f"({str(exc).splitlines()[-1].strip()}).", "Use that run's method.r.") from None
    return meta


def _deep_prompts(meta: dict) -> bool:
    config = meta.get("method_config") or {}
    return meta["method"] == "prefix" or (meta["method"] == "ptuning" and config.get("version", 2) == 2)


def merge_trained(model: nn.Module, method: str) -> nn.Module:
    """Fold the trained weights into the base and return a plain transformers model.

    LoRA-family and IA3 adapters are merged with PEFT's ``merge_and_unload(safe_merge=True)``
    (which refuses to produce NaNs); full/freeze/BitFit models already are plain models.

    Raises:
        ConfigError: the method has no mergeable form (prompts, prefixes, bottleneck adapters
            add computation that no weight matrix can absorb).
    """
    if not method_info(method).mergeable:
        raise ConfigError(
            f"A model trained with method '{method}' cannot be merged: its extra vectors or layers add "
            "computation that no base weight can absorb.",
            "Serve it with its adapter instead (base model + final/).",
        )
    if method_info(method).family == "weights":
        return model
    if getattr(model, "is_loaded_in_4bit", False) or getattr(getattr(model, "base_model", None), "is_loaded_in_4bit", False):
        raise ConfigError(
            "This QLoRA model's base is 4-bit; merging into it would round the adapter away.",
            "Load the adapter onto the full-precision base (load_trained(final_dir, full_precision=True)) and merge that.",
        )
    _unwrap_trained_copies(model)
    with torch.no_grad():
        return model.merge_and_unload(safe_merge=True)


def _unwrap_trained_copies(model) -> None:
    # Fully trained modules (classification heads) sit in PEFT wrappers holding the frozen
    # original and the trained copy. Put the trained copy in place before merging: some
    # tuners (IA3) try to merge into the wrapper itself and fail.
    from peft.utils import ModulesToSaveWrapper

    for name, module in list(model.named_modules()):
        if isinstance(module, ModulesToSaveWrapper):
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, module.modules_to_save[module.active_adapters[0]])
