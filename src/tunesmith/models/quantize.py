"""4-bit loading of base models (QLoRA) through bitsandbytes."""

from __future__ import annotations

import torch

from tunesmith.errors import ModelError

SKIP_MODULES = ("classifier", "score", "pooler", "pooler.dense", "lm_head")  # matched as name suffixes
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def four_bit_config(quant_type: str = "nf4", double_quant: bool = True, compute_dtype: str = "bfloat16"):
    """A ``BitsAndBytesConfig`` that stores linear weights in 4 bits (NF4 or FP4).

    bitsandbytes >= 0.46 quantises on CPU as well as CUDA, so the same path runs here
    (slowly: CPU dequantises per matmul) and on a GPU.

    Raises:
        ModelError: bitsandbytes is not installed.
    """
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ModelError(
            "QLoRA needs the bitsandbytes package to load the base model in 4 bits.",
            "Install it with: pip install 'tunesmith[qlora]' (or pip install bitsandbytes).",
        ) from None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant_type,
        bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=DTYPES[compute_dtype],
        # Task heads stay in full precision: classification heads are new and train in full,
        # and the LM head's precision matters most for the output distribution.
        llm_int8_skip_modules=list(SKIP_MODULES),
    )


def keep_trainable_layout(model) -> None:
    """Stop bitsandbytes (>= 0.49) repacking 4-bit weights for its CPU inference kernel.

    On a CPU with AVX512-BF16 a ``Linear4bit`` in eval mode rewrites its weight into a packed
    layout the first time it runs without gradients; training cannot backpropagate through
    that layout ("a view of a leaf Variable ... in-place"), and a run evaluates between
    training steps. Keeping the trainable layout costs only the inference speed-up.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def quantization_settings(method_cfg) -> dict | None:
    """The 4-bit settings a method needs for its base model (None for unquantised methods)."""
    if method_cfg.type != "qlora":
        return None
    return {"quant_type": method_cfg.quant_type, "double_quant": method_cfg.double_quant,
            "compute_dtype": method_cfg.compute_dtype}
