"""The LoRA family through PEFT: LoRA (rsLoRA, DoRA, PiSSA, LoRA+), QLoRA and AdaLoRA.

PEFT does the adapting; this module adds what a recipe needs around it: per-architecture
default targets, classification heads trained in full, LoRA+'s learning-rate ratio
(as a per-parameter multiplier the optimizer reads), PiSSA adapters saved so they
apply to the *original* base, and AdaLoRA's budget schedule expressed in shares of
the run instead of raw step numbers.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from peft import AdaLoraConfig, LoraConfig, TaskType, get_peft_model
from torch import nn

from tunesmith.errors import ConfigError

# Attention projections (and MLP for decoders, where adapting them is known to pay off)
# for the model types we ship or commonly meet. Unknown types fall back to "all-linear".
DEFAULT_TARGETS = {
    "bert": ["query", "key", "value"],
    "roberta": ["query", "key", "value"],
    "distilbert": ["q_lin", "k_lin", "v_lin", "out_lin"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "gpt2": ["c_attn", "c_proj", "c_fc"],
}
CLASSIFICATION_HEADS = ("classifier", "score", "pooler")
# Name of the per-parameter learning-rate multiplier that build_optimizer honours.
LR_SCALE_ATTR = "tunesmith_lr_scale"
INIT = {"default": True, "gaussian": "gaussian", "pissa": "pissa"}


def peft_task_type(task: str) -> TaskType:
    return TaskType.SEQ_CLS if task == "classification" else TaskType.CAUSAL_LM


def default_targets(model: nn.Module) -> list[str] | str:
    """Target module names for ``model``'s architecture (``"all-linear"`` when unknown)."""
    return DEFAULT_TARGETS.get(getattr(model.config, "model_type", ""), "all-linear")


def head_modules(model: nn.Module, task: str, extra: list[str] | None = None) -> list[str] | None:
    """Classification heads present in ``model`` (they are new, so they must train in full)."""
    names = list(extra or [])
    if task == "classification":
        present = {name.split(".")[-1] for name, _ in model.named_modules()}
        names += [h for h in CLASSIFICATION_HEADS if h in present and h not in names]
    return names or None


def wrap(model: nn.Module, config, method: str) -> nn.Module:
    """``get_peft_model`` with PEFT's ValueErrors turned into a recipe-level error."""
    try:
        return get_peft_model(model, config)
    except (ValueError, TypeError, NotImplementedError) as exc:
        raise ConfigError(
            f"{method} could not be applied to {type(model).__name__}: {exc}",
            f"Check method.target_modules (default for this model: {default_targets(model)}) "
            "or pick another method.",
        ) from None


def apply_lora(model: nn.Module, method_cfg, task: str, **context) -> nn.Module:
    """Wrap ``model`` with LoRA adapters; classification heads train in full (modules_to_save)."""
    config = LoraConfig(
        task_type=peft_task_type(task),
        r=method_cfg.r,
        lora_alpha=method_cfg.alpha,
        lora_dropout=method_cfg.dropout,
        target_modules=method_cfg.target_modules or default_targets(model),
        modules_to_save=head_modules(model, task, method_cfg.modules_to_save),
        use_rslora=method_cfg.use_rslora,
        use_dora=method_cfg.use_dora,
        init_lora_weights=INIT[method_cfg.init],
        # New vocabulary rows train beside the adapter (tied output rows with them), not the whole matrix.
        trainable_token_indices=context.get("new_token_ids") or None,
    )
    if method_cfg.init == "pissa" and method_cfg.dropout:
        raise ConfigError("PiSSA needs method.dropout: 0 (its adapter starts as part of the base weight).")
    if method_cfg.init == "pissa" and method_cfg.use_dora:
        raise ConfigError("PiSSA init with DoRA is not supported: the saved adapter could not be converted "
                          "to apply to the original base.", "Use one of init: pissa or use_dora.")
    peft_model = wrap(model, config, "LoRA")
    if method_cfg.init == "pissa":
        _remember_pissa_init(peft_model)
    for name, p in peft_model.named_parameters():
        if p.requires_grad and method_cfg.lora_plus_ratio and ("lora_B" in name or "lora_embedding_B" in name):
            setattr(p, LR_SCALE_ATTR, method_cfg.lora_plus_ratio)
        if p.requires_grad and "trainable_tokens_delta" in name:  # the new vocabulary rows
            setattr(p, LR_SCALE_ATTR, context.get("new_token_lr_scale", 1.0))
    return peft_model


def _remember_pissa_init(peft_model) -> None:
    # PiSSA moves the top singular directions out of the base weight into the adapter, so
    # the trained adapter only fits that modified base. Keeping the initial A0/B0 lets
    # save_pissa_as_lora turn it into an ordinary LoRA for the original base.
    from peft import get_peft_model_state_dict

    peft_model.tunesmith_pissa_init = {
        k: v.detach().clone() for k, v in get_peft_model_state_dict(peft_model).items() if ".lora_" in k
    }


def save_pissa_as_lora(peft_model, final_dir) -> None:
    """Save a PiSSA-initialised model as a standard LoRA adapter for the *original* base.

    W = W_res + B0·A0 at init and W_res + B·A after training, so the update is
    ΔW = B·A − B0·A0 = [B | −B0]·[A ; A0]: a LoRA of rank 2r with the same scale. (PEFT's
    own conversion loses classification heads saved through modules_to_save.)
    """
    import json
    import math
    from pathlib import Path

    from safetensors.torch import load_file, save_file

    final_dir = Path(final_dir)
    peft_model.save_pretrained(final_dir, safe_serialization=True)
    weights_file = final_dir / "adapter_model.safetensors"
    weights = load_file(weights_file)
    initial = peft_model.tunesmith_pissa_init
    for name in list(weights):
        if ".lora_A." in name:
            weights[name] = torch.cat([weights[name], initial[name]], dim=0).contiguous()
        elif ".lora_B." in name:
            weights[name] = torch.cat([weights[name], -initial[name]], dim=1).contiguous()
    save_file(weights, weights_file, metadata={"format": "pt"})
    config_file = final_dir / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["r"] *= 2
    # Keep the scale: alpha / r (or alpha / sqrt(r) with rsLoRA) must not change.
    config["lora_alpha"] *= math.sqrt(2) if config.get("use_rslora") else 2
    config["init_lora_weights"] = True
    config_file.write_text(json.dumps(config, indent=2))


def apply_qlora(model: nn.Module, method_cfg, task: str, **context) -> nn.Module:
    """LoRA on a base loaded in 4-bit (the runner loads it quantised for this method)."""
    from peft import prepare_model_for_kbit_training

    if not getattr(model, "is_loaded_in_4bit", False):
        raise ConfigError(
            "method qlora needs the base model loaded in 4-bit.",
            "Run it through a recipe (the runner quantises the base for qlora) or load the model with "
            "tunesmith.models.quantize.four_bit_config().",
        )
    # Casts norms/heads to fp32 and lets gradients flow into the adapters through the
    # frozen 4-bit layers; no gradient checkpointing unless asked (it costs ~30% speed).
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return apply_lora(model, method_cfg, task, **context)


def apply_adalora(model: nn.Module, method_cfg, task: str, *, total_steps: int | None = None, **context) -> nn.Module:
    """AdaLoRA: start at ``init_r`` everywhere, then prune towards ``target_r`` on average.

    ``tinit``/``tfinal`` are shares of ``total_steps``; the loop calls the rank allocator
    after every optimizer step through :func:`adalora_hooks`.
    """
    if not total_steps:
        raise ConfigError("AdaLoRA needs the number of training steps to plan its rank budget.")
    tinit = round(method_cfg.tinit * total_steps)
    tfinal = round(method_cfg.tfinal * total_steps)
    if total_steps - tfinal - tinit < 1:
        raise ConfigError(
            f"AdaLoRA's budget schedule needs pruning steps, but with {total_steps} steps tinit={tinit} "
            f"and tfinal={tfinal} leave none.",
            "Train for more steps or lower method.tinit / method.tfinal.",
        )
    config = AdaLoraConfig(
        task_type=peft_task_type(task),
        init_r=method_cfg.init_r,
        target_r=method_cfg.target_r,
        tinit=tinit,
        tfinal=tfinal,
        deltaT=method_cfg.delta_t,
        beta1=method_cfg.beta1,
        beta2=method_cfg.beta2,
        orth_reg_weight=method_cfg.orth_reg_weight,
        total_step=total_steps,
        lora_alpha=method_cfg.alpha,
        lora_dropout=method_cfg.dropout,
        target_modules=method_cfg.target_modules or default_targets(model),
        modules_to_save=head_modules(model, task),
    )
    return wrap(model, config, "AdaLoRA")


def adalora_orthogonality(model) -> torch.Tensor:
    """AdaLoRA's penalty ||PᵀP − I|| + ||QQᵀ − I||, averaged over matrices, times its weight.

    PEFT adds it only when the model computes the loss itself; our objectives compute
    their own loss, so the loop adds this term.
    """
    base = model.base_model
    name = base.trainable_adapter_name
    weight = base.peft_config[name].orth_reg_weight
    total, count = None, 0
    for n, p in model.named_parameters():
        if (f"lora_A.{name}" in n or f"lora_B.{name}" in n) and p.numel():
            cov = p @ p.T if "lora_A" in n else p.T @ p
            term = torch.linalg.matrix_norm(cov - torch.eye(cov.shape[0], device=cov.device, dtype=cov.dtype))
            total = term if total is None else total + term
            count += 1
    return weight * total / count if count else torch.zeros(())


def adalora_allocate(model, step: int) -> None:
    """Update importance scores and mask ranks; called after optimizer.step, before zero_grad."""
    model.base_model.update_and_allocate(step)


def adalora_state(model) -> dict:
    """The rank allocator's running scores and the current rank pattern (for exact resume)."""
    base = model.base_model
    allocator = base.rankallocator
    name = base.trainable_adapter_name
    return {
        "ipt": dict(allocator.ipt),
        "exp_avg_ipt": dict(allocator.exp_avg_ipt),
        "exp_avg_unc": dict(allocator.exp_avg_unc),
        "rank_pattern": base.peft_config[name].rank_pattern,
    }


def load_adalora_state(model, state: dict) -> None:
    base = model.base_model
    allocator = base.rankallocator
    allocator.ipt, allocator.exp_avg_ipt, allocator.exp_avg_unc = (
        dict(state["ipt"]), dict(state["exp_avg_ipt"]), dict(state["exp_avg_unc"])
    )
    base.peft_config[base.trainable_adapter_name].rank_pattern = state["rank_pattern"]


@contextmanager
def full_rank_weights(model):
    """Save checkpoints at full rank: with a rank pattern set, PEFT saves pruned tensors,
    which the still full-rank model of a resumed run could not load."""
    config = model.base_model.peft_config[model.base_model.trainable_adapter_name]
    pattern, config.rank_pattern = config.rank_pattern, None
    try:
        yield
    finally:
        config.rank_pattern = pattern
