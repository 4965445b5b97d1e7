"""Partial methods (freeze, BitFit) store only what they trained.

They train a small share of a model's tensors (BitFit: the biases and the head; freeze:
the top blocks and the head) and leave the rest equal to the base. Saving the whole model
would spend the base's size on every run; instead ``final/`` keeps the trained tensors in
``trained_weights.safetensors`` (named as in the model's state dict), with the base named
in ``tunesmith.json``. Loading builds the base and puts those tensors in place, checking
that each one names a tensor of the base with the same shape. The model card shows the
same loading with plain transformers and safetensors.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from tunesmith.errors import ModelError

DELTA_FILE = "trained_weights.safetensors"
DELTA_METHODS = ("freeze", "bitfit")


def save_delta(model: nn.Module, final_dir: Path) -> int:
    """Write the tensors of ``model`` that train (``requires_grad``) to ``final_dir``; returns their count."""
    from safetensors.torch import save_file

    trained = {name: p.detach().to("cpu").contiguous() for name, p in model.named_parameters() if p.requires_grad}
    if not trained:
        raise ModelError("The model has no trained tensors to save.", "Check the method's settings.")
    save_file(trained, str(Path(final_dir) / DELTA_FILE), metadata={"format": "pt"})
    return len(trained)


def load_delta(model: nn.Module, final_dir: Path) -> nn.Module:
    """Put the trained tensors of ``final_dir`` into ``model`` (its base, freshly loaded).

    Raises:
        ModelError: a saved tensor names no tensor of the base, or has another shape (the
            delta belongs to another base model).
    """
    from safetensors.torch import load_file

    saved = load_file(str(Path(final_dir) / DELTA_FILE))
    own = model.state_dict()
    unknown = sorted(set(saved) - set(own))
    if unknown:
        raise ModelError(f"{final_dir / DELTA_FILE} holds {len(unknown)} tensors the base model lacks "
                         f"(first: {unknown[0]}).", "Load it onto the base named in its tunesmith.json.")
    for name, tensor in saved.items():
        if tensor.shape != own[name].shape:
            raise ModelError(f"{final_dir / DELTA_FILE}: {name} is {tuple(tensor.shape)}, the base's is "
                             f"{tuple(own[name].shape)}.", "Load it onto the base named in its tunesmith.json.")
    with torch.no_grad():
        for name, tensor in saved.items():
            own[name].copy_(tensor)
    return model


def loader_snippet(head: str, extra: str) -> list[str]:
    """The model card's plain transformers + safetensors loader for a delta."""
    return ["With transformers + safetensors only (the base as recorded in `tunesmith.json`, `base_model_path`; "
            f"`{DELTA_FILE}` holds only the trained tensors):", "",
            "```python", "import json", "import torch", "from safetensors.torch import load_file",
            f"from transformers import AutoTokenizer, {head}", "",
            "def load_partial(folder):",
            '    meta = json.load(open(f"{folder}/tunesmith.json"))',
            f'    model = {head}.from_pretrained(meta["base_model_path"]{extra})',
            f'    trained = load_file(f"{{folder}}/{DELTA_FILE}")',
            "    state = model.state_dict()",
            "    with torch.no_grad():",
            "        for name, tensor in trained.items():",
            "            state[name].copy_(tensor)",
            "    return model.eval(), AutoTokenizer.from_pretrained(folder)", "",
            'model, tokenizer = load_partial("final")', "```"]
