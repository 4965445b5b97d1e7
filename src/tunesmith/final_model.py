"""final/: the trained model (a PEFT adapter or full weights), its tokenizer and tunesmith.json,
loadable without Tunesmith."""

from __future__ import annotations

import sys
from pathlib import Path

from tunesmith.config.schema import RecipeConfig
from tunesmith.data.template_check import check_template, write_template_probes
from tunesmith.methods.delta import DELTA_METHODS
from tunesmith.methods.saved import save_trained
from tunesmith.modelcard import portable_adapter_config
from tunesmith.models.load import load_tokenizer
from tunesmith.models.quantize import quantization_settings
from tunesmith.rundir import write_model_meta


def save_final(model, tokenizer, final_dir: Path, config: RecipeConfig, source: str, labels,
               new_tokens=None) -> None:
    """Write the trained model (a PEFT adapter or full weights) + tokenizer, loadable without Tunesmith.

    ``new_tokens`` (:class:`tunesmith.models.vocab.NewTokens`): the tokens the run added, recorded
    so a reload rebuilds the base's enlarged embeddings before the adapter goes on."""
    final_dir.mkdir(parents=True, exist_ok=True)
    # Freeze and BitFit keep only their trained tensors, unless the model is not its base's
    # shape (a distillation student with dropped blocks).
    delta = config.method.type in DELTA_METHODS and not (config.task == "distill" and config.distill.keep_every)
    save_trained(model, final_dir, delta=delta)
    tokenizer.save_pretrained(final_dir)
    portable_adapter_config(final_dir, config.model.name)
    meta = {
        "task": config.model_task,
        "stage": config.task,
        "method": config.method.type,
        "method_config": config.method.model_dump(),
        "quantization": quantization_settings(config.method),
        "base_model": config.model.name,
        "base_model_path": source,
        "labels": labels,
        "system_prompt": config.data.system_prompt,
        "max_length": config.data.max_length,
        "weights": "delta" if delta else "full",
        "vocab": new_tokens.as_meta() if new_tokens else None,
        # The precision it was trained and scored in ("auto" resolved): `tunesmith eval` re-scores in it.
        "precision": config.train.precision,
        "tunesmith_version": sys.modules["tunesmith"].__version__,
    }
    if config.model_task == "causal_lm" and tokenizer.chat_template:
        # Training's rendering of probe chats, checked now against the tokenizer as saved
        # (and later by the server and every export).
        write_template_probes(final_dir, tokenizer, config.data.system_prompt)
    write_model_meta(final_dir, meta)  # last: it records the hashes of everything above
    if config.model_task == "causal_lm" and tokenizer.chat_template:
        check_template(final_dir, load_tokenizer(str(final_dir)), "the saved final/ tokenizer")
