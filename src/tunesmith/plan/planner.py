"""`tunesmith plan`: parameters, memory, time and disk of a recipe on a device.

Memory comes from :mod:`tunesmith.plan.trace` (what one micro-batch really keeps) and
:mod:`tunesmith.plan.memory` (when a step peaks). Time is the step's counted work
(:mod:`tunesmith.plan.work`: matmul FLOPs, random numbers, bytes moved by fresh and
in-place ops, from a fake forward, backward and optimizer step) over the device's
measured rates for each kind (:mod:`tunesmith.plan.device`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, field

from tunesmith.config.methods import method_info
from tunesmith.plan.device import Device, resolve_device
from tunesmith.plan.memory import (OPTIMIZER_STATE, MemoryPlan, activation_bytes, checkpoint_stride,
                                   checkpointed_blocks, estimate_memory, micro_batch)
from tunesmith.plan.trace import NF4_BYTES, NF4_DOUBLE_QUANT_BYTES, Trace, model_config, trace_training

# What the training process holds before the model loads, when it cannot be measured (a
# GPU plan's host side is not part of the GPU budget).
CUDA_CONTEXT_BYTES = 500 * 2**20


@dataclass
class Plan:
    """Everything `tunesmith plan` prints (``--json`` prints this as a dict)."""

    recipe: str
    method: str
    device: dict
    micro_batch: dict
    params: dict
    weights_by_dtype: dict
    components: dict
    peak_moment: str
    total_bytes: int
    fits: bool
    sizes: dict  # gradients, optimizer state (AdamW and 8-bit AdamW), activations with/without checkpointing
    time: dict
    disk: dict
    settings: dict = field(default_factory=dict)  # precision and gradient checkpointing as planned ("auto" resolved)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def step_seconds(trace: Trace, rates, config, kind: str | None = None) -> float:
    """One optimizer step: every micro-batch's forward and backward (plus a second forward
    of the checkpointed blocks), then the optimizer. ``kind``: time this
    machine's matrix-product and attention calls one by one."""
    recomputed = checkpointed_blocks(trace, checkpoint_stride(config.train))
    micro = (rates.seconds(trace.forward_work, kind) + rates.seconds(trace.backward_work, kind)
             + _heap_growth_seconds(trace, rates, recomputed))
    if recomputed:
        micro += recomputed * rates.seconds(trace.block_forward_work, kind)
    return micro * config.train.grad_accum + rates.seconds(trace.optimizer_work, kind)


def _heap_growth_seconds(trace: Trace, rates, recomputed: int) -> float:
    # The activations a forward pass writes below the mmap threshold land in fresh heap
    # pages, faulted in every micro-batch (larger tensors are mapped anew each time: counted
    # in the work itself). Gradient checkpointing writes its blocks' activations twice: in
    # the forward (transient) and again when the backward recomputes them (``recomputed`` blocks). Measured on
    # SmolLM2 full (4 x 128, bf16): the checkpointed forward took as long as the plain one.
    if not rates.fault_bytes or not trace.saved_bytes:
        return 0.0
    written = 1.0 + recomputed * trace.block_saved_bytes / trace.saved_bytes
    return trace.small_saved_bytes * written / rates.fault_bytes


def weights_by_dtype(total_params: int) -> dict:
    """Bytes of ``total_params`` weights in each storage format."""
    return {"fp32": total_params * 4, "bf16": total_params * 2, "int8": total_params,
            "nf4": int(total_params * NF4_BYTES), "nf4_double_quant": int(total_params * NF4_DOUBLE_QUANT_BYTES)}


def current_baseline(device: Device) -> int:
    """The process baseline: this planning process's resident memory at its first plan (it
    has imported what training imports; in `train` it is the moment before the model loads)
    on a CPU; PyTorch's allocator starts near empty on a GPU. Measured once, so every plan
    of a process (the advisor's comparisons) shares it."""
    if device.kind == "cuda":
        return 0
    return _first_rss()


@functools.lru_cache(maxsize=1)
def _first_rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def make_plan(config, *, device_spec: str | None = None, gpus: int = 1, longest: int | None = None,
              target_share: float = 1.0, budget_bytes: int | None = None, examples: int | None = None,
              source: str | None = None, with_time: bool = True, vocab_rows: int | None = None) -> Plan:
    """The plan of ``config``. ``longest``/``target_share`` describe the data when it is known
    (the worst case otherwise); ``examples`` is the training set's size, for epoch time.
    ``with_time=False`` skips the step-time work count and the rate microbenchmarks.
    ``vocab_rows``: the embedding rows after vocabulary expansion (the base's otherwise)."""
    from tunesmith.models.load import resolve_model_source

    source = source or resolve_model_source(config.model.name)
    hf_config = model_config(source, config.model.trust_remote_code)
    if vocab_rows:  # new tokens grow the embeddings and every row of logits
        hf_config.vocab_size = vocab_rows
    config, settings_notes = _planned_precision(config, device_spec)
    batch = micro_batch(config, longest, target_share)
    labels = 1 if config.task == "reward" else len(config.data.labels) if config.data.labels else 2
    trace = trace_training(config, hf_config, batch.rows, batch.length, batch.targets_per_row, labels, with_time)
    hidden = trace.hidden or 768
    ffn = getattr(hf_config, "intermediate_size", 4 * hidden)
    # The matmul microbenchmark at the micro-batch's token count (at least 1,024 rows: the
    # backward pass's weight-gradient products have the hidden sizes as their short side).
    device = resolve_device(device_spec, gpus, (min(max(batch.rows * batch.length, 1024), 4096), hidden, ffn),
                            config.train.precision, budget_bytes, with_time)
    config, memory = _memory_with_checkpointing(trace, config, device, settings_notes)
    step_s = (step_seconds(trace, device.rates, config, device.kind if device.local else None) / device.count
              if device.rates else None)
    flops = (trace.forward_work.flops + trace.backward_work.flops) * config.train.grad_accum
    global_batch = batch.rows * config.train.grad_accum * device.count
    steps_per_epoch = math.ceil(examples / global_batch) if examples else None
    notes = settings_notes + list(memory.notes)
    if device.kind == "cuda" and device.count == 1:
        notes.append(f"plus about {CUDA_CONTEXT_BYTES / 2**30:.1f} GiB of CUDA context outside PyTorch's allocator")
    if device.count > 1:
        notes.append(f"data parallel on {device.count} GPUs: every GPU holds the memory above; time is divided")
    return Plan(
        recipe=config.name, method=config.method.type,
        device={"name": device.name, "kind": device.kind, "memory_bytes": device.memory_bytes, "count": device.count,
                "rates": asdict(device.rates) if device.rates else None},
        micro_batch=asdict(batch),
        params={"total": trace.total_params, "trainable": trace.trainable_params, "biases": trace.bias_params,
                "vocab_rows": trace.vocab,
                "trainable_share": trace.trainable_params / max(trace.total_params, 1)},
        weights_by_dtype=weights_by_dtype(trace.total_params),
        components=memory.components, peak_moment=memory.peak_moment, total_bytes=memory.total_bytes,
        sizes={"gradients": trace.trainable_bytes, "adamw": 2 * trace.trainable_bytes,
               "adamw_8bit": int(trace.trainable_params * OPTIMIZER_STATE["adamw_8bit"]),
               "activations": activation_bytes(trace, None), "activations_checkpointed": activation_bytes(trace, 1)},
        fits=memory.total_bytes <= device.memory_bytes,
        time={"flops_per_step": flops, "step_s": step_s, "steps_per_epoch": steps_per_epoch,
              "epoch_s": step_s * steps_per_epoch if step_s and steps_per_epoch else None},
        disk=checkpoint_disk(source, config, trace), notes=notes,
        settings={"precision": config.train.precision, "gradient_checkpointing": config.train.gradient_checkpointing,
                  "gradient_checkpointing_every_n_layers": config.train.gradient_checkpointing_every_n_layers},
    )


# gradient_checkpointing: auto turns it on when the plan without it passes this share of the budget,
# recomputing every Nth block for the first of these strides whose plan comes within it.
TIGHT_SHARE = 0.9
AUTO_STRIDES = (4, 2, 1)


def _planned_precision(config, device_spec: str | None):
    """``config`` with ``precision: auto`` resolved for the planned device, and a note saying so."""
    from tunesmith.config.train_section import with_train
    from tunesmith.train.precision import resolve_precision

    if config.train.precision != "auto":
        return config, []
    import torch

    spec = (device_spec or ("cuda" if torch.cuda.is_available() else "cpu")).lower()
    if spec in ("cpu", "cuda"):
        used, why = resolve_precision("auto", spec)
    else:  # a named GPU, not this machine's: training GPUs have had bf16 since Ampere
        used, why = "bf16", f"{spec} is planned as a GPU with bf16 (Ampere or later)"
    return with_train(config, precision=used), [f"precision auto: {used} ({why})"]


def _memory_with_checkpointing(trace: Trace, config, device: Device, notes: list[str]):
    """The memory plan, and ``config`` with ``gradient_checkpointing: auto`` resolved: off
    while the plan without it stays within TIGHT_SHARE of the device's memory, else on with
    the least recompute that comes within it (every 4th, every 2nd, or every block)."""
    from tunesmith.config.train_section import with_train

    baseline, cpu = current_baseline(device), device.kind == "cpu"
    if config.train.gradient_checkpointing != "auto":
        return config, estimate_memory(trace, config, baseline, cpu=cpu)
    config = with_train(config, gradient_checkpointing=False)
    memory = estimate_memory(trace, config, baseline, cpu=cpu)
    share = memory.total_bytes / device.memory_bytes
    if share <= TIGHT_SHARE:
        notes.append(f"gradient checkpointing auto: off (the plan without it is {100 * share:.0f}% of the budget)")
        return config, memory
    for stride in AUTO_STRIDES:
        chosen = with_train(config, gradient_checkpointing=True, gradient_checkpointing_every_n_layers=stride)
        memory = estimate_memory(trace, chosen, baseline, cpu=cpu)
        if memory.total_bytes <= TIGHT_SHARE * device.memory_bytes:
            break
    which = {1: "every block", 2: "every 2nd block", 4: "every 4th block"}[stride]
    notes.append(f"gradient checkpointing auto: on, {which} (without it the plan is {100 * share:.0f}% of the "
                 f"budget, above {100 * TIGHT_SHARE:.0f}%; with it {100 * memory.total_bytes / device.memory_bytes:.0f}%)")
    return chosen, memory


def plan_all_methods(config, **kwargs) -> dict[str, Plan | str]:
    """A plan per method of the catalog (its default settings), or why it cannot apply."""
    from tunesmith.config.methods import METHOD_TYPES
    from tunesmith.config.schema import RecipeConfig
    from tunesmith.errors import ConfigError
    from pydantic import ValidationError

    plans: dict[str, Plan | str] = {}
    for name in METHOD_TYPES:
        data = config.model_dump(mode="json")
        data["method"] = {"type": name}
        try:
            plans[name] = make_plan(RecipeConfig.model_validate(data), **kwargs)
        except (ConfigError, ValidationError) as exc:  # e.g. BitFit on a model without biases
            plans[name] = str(exc).splitlines()[0]
    return plans


def checkpoint_disk(source: str, config, trace: Trace) -> dict:
    """Bytes of one checkpoint and of all kept checkpoints plus final/."""
    from pathlib import Path

    folder = Path(source)
    weights = sum(f.stat().st_size for f in folder.glob("*.safetensors")) if folder.is_dir() else 0
    weights = weights or trace.total_params * 4
    info = method_info(config.method.type)
    if info.family == "weights":
        one = weights + 2 * trace.trainable_bytes  # the model, and the trained parameters' moments
    else:
        one = 3 * trace.trainable_bytes  # the adapter and its moments
    train = config.train
    saving = bool(train.save_every or train.save_every_epoch)
    kept = ((train.keep_last_n or 10) + (1 if train.keep_best else 0)) if saving else 0
    # final/: the whole model for full fine-tuning; the adapter, or the trained tensors
    # of freeze and BitFit, otherwise.
    final = weights if config.method.type == "full" else trace.trainable_bytes
    return {"checkpoint_bytes": int(one), "kept": kept, "total_bytes": int(one * kept + final)}
