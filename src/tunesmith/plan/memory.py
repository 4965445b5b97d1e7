"""Peak memory of a training run, component by component.

A step's memory peaks at one of two moments:
- the start of the backward pass: weights, optimizer moments, the activations the forward
  pass saved, and the loss's gradient over the logits (with gradient accumulation, the
  gradients of earlier micro-batches are held too);
- the optimizer step: weights, gradients, moments, and one temporary the size of the
  trained parameters (AdamW's foreach step divides by ``sqrt(v) + eps`` out of place).
Both hold the guard's rollback target, a copy of the trained weights as they started
(``train/rollback.py``).

Evaluation (no gradients, ``eval_batch_size`` rows) peaks lower on every recipe we measured,
so it is not modelled. ``total_bytes`` adds the process baseline: what the training process
holds before the model loads (the Python interpreter, torch, transformers, the data).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from tunesmith.plan.trace import Trace

# Bytes per trained parameter of each optimizer's state: AdamW keeps two moments in the
# parameters' dtype; 8-bit AdamW (bitsandbytes) two 8-bit moments plus block scales.
HEAP_SLACK = 0.75
# Optimizer state per trainable parameter: in copies of its gradient for the optimizers
# whose states take the parameters' dtype, in bytes for 8-bit AdamW (two uint8 moments plus
# a float32 scale per 256-value block, as bitsandbytes 0.50 stores them: measured in
# tests/unit/test_optimizers.py). Adafactor keeps row and column statistics per
# matrix: for hidden-size matrices about 1% of a copy (counted as that).
STATE_COPIES = {"adamw": 2.0, "lion": 1.0, "sgd": 1.0, "adafactor": 0.01}
OPTIMIZER_STATE = {"adamw_8bit": 2 * (1 + 4 / 256)}


@dataclass
class MicroBatch:
    """The shape a micro-batch is planned at: the longest one the run can meet."""

    rows: int
    length: int           # tokens per row (virtual tokens of prompt methods are added by the model)
    targets_per_row: int  # positions whose next token is trained (causal LMs)


@dataclass
class MemoryPlan:
    """The estimate: each component in bytes, the peak moment, and their total."""

    components: dict[str, int]
    peak_moment: str  # "backward" or "optimizer step"
    total_bytes: int
    notes: list[str] = field(default_factory=list)


def micro_batch(config, longest: int | None = None, target_share: float = 1.0) -> MicroBatch:
    """The planned micro-batch of ``config``: ``batch_size`` rows of the longest length.

    ``longest`` is the longest tokenized example when the data is known (otherwise
    ``data.max_length``, the worst case); ``target_share`` the share of tokens trained
    (1.0 for pretraining and the worst case of chat SFT)."""
    length = min(config.data.max_length, longest or config.data.max_length)
    rows = config.train.batch_size if isinstance(config.train.batch_size, int) else 1
    if config.data.packing:
        length = config.data.max_length  # packed rows are full
    if config.model_task != "causal_lm":
        targets = 1
    elif not config.train.lm_head_on_targets:
        targets = length  # the LM head runs over every position
    else:
        targets = max(1, math.ceil((length - 1) * target_share))
    return MicroBatch(rows, length, targets)


def checkpoint_stride(train) -> int | None:
    """Gradient checkpointing under ``train`` (a recipe's train section): it recomputes every
    Nth block from the first, as transformers' ``every_n_layers`` picks them; None when off."""
    return train.gradient_checkpointing_every_n_layers if train.gradient_checkpointing else None


def checkpointed_blocks(trace: Trace, stride: int | None) -> int:
    """How many of the trace's blocks a checkpoint ``stride`` recomputes (0 when None)."""
    return math.ceil(trace.blocks / stride) if stride else 0


def activation_bytes(trace: Trace, stride: int | None) -> int:
    """Activations held at the backward pass's worst moment when every ``stride``-th block
    keeps only its input and the others keep everything (None: no checkpointing)."""
    if not stride:
        return trace.saved_bytes
    outside = trace.saved_bytes - trace.blocks * trace.block_saved_bytes
    checkpointed = checkpointed_blocks(trace, stride)
    # The backward pass frees each block's activations as it passes it, top down. A
    # checkpointed block is rebuilt when the pass reaches it, after every block above it has
    # been freed: the rebuild adds to the peak only when the top block is one of them;
    # otherwise the top block's kept activations are the larger moment.
    top_rebuilt = (trace.blocks - 1) % stride == 0
    kept = trace.blocks - checkpointed
    return outside + checkpointed * trace.block_input_bytes + (kept + top_rebuilt) * trace.block_saved_bytes


def estimate_memory(trace: Trace, config, baseline_bytes: int, optimizer: str | None = None,
                    cpu: bool = True) -> MemoryPlan:
    """The peak memory of training ``config`` with the facts of ``trace`` (``cpu``: resident
    memory of a CPU process, with glibc's heap slack; else a GPU allocator's peak).
    ``optimizer``: the recipe's ``train.optimizer`` unless given."""
    grads = trace.trainable_bytes
    optimizer = optimizer or config.train.optimizer
    state = int(STATE_COPIES[optimizer] * grads) if optimizer in STATE_COPIES \
        else int(trace.trainable_params * OPTIMIZER_STATE[optimizer])
    activations = activation_bytes(trace, checkpoint_stride(config.train))
    # The loss's gradient over the logits: the NLL gradient and the log-softmax gradient, on
    # top of the saved log-softmax, at the backward start. (On tiny models whose memory is
    # almost all logits, the measured peak held one copy less: see docs/results/plan-accuracy.md.)
    logits_grad = 2 * trace.logits_bytes
    held_grads = grads if config.train.grad_accum > 1 else 0
    # The guard's rollback target before the first checkpoint: a copy of the trained weights.
    rollback = trace.trainable_bytes
    # The heap keeps freed activation blocks below the mmap threshold, and the next pass's
    # blocks do not fit every hole: 0.75 of those bytes stay resident on top (fitted on
    # benchmarks/plan_accuracy.py; blocks above the threshold go back to the system).
    # With gradient checkpointing only a block at a time churns: the slack shrinks with the activations.
    churn = activations / trace.saved_bytes if config.train.gradient_checkpointing and trace.saved_bytes else 1.0
    slack = int(HEAP_SLACK * trace.small_saved_bytes * min(churn, 1.0)) if cpu else 0
    backward = trace.weight_bytes + state + activations + logits_grad + held_grads + rollback + slack
    step = trace.weight_bytes + state + 2 * grads + rollback + slack
    # The components of the moment that peaks: they add up to the total.
    if backward >= step:
        moment, components = "backward", {
            "baseline": baseline_bytes, "weights": trace.weight_bytes, "optimizer": state,
            "activations": activations, "loss_gradient": logits_grad, "gradients": held_grads,
            "rollback_copy": rollback, "allocator_slack": slack}
    else:
        moment, components = "optimizer step", {
            "baseline": baseline_bytes, "weights": trace.weight_bytes, "optimizer": state,
            "gradients": grads, "step_temporary": grads, "rollback_copy": rollback, "allocator_slack": slack}
    notes = []
    if config.model_task == "causal_lm":
        notes.append("logits: every token of the longest micro-batch counted as a target (the worst case)")
    return MemoryPlan(components, moment, baseline_bytes + max(backward, step), notes)
