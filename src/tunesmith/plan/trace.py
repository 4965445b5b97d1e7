"""What one training micro-batch keeps in memory, measured without running it.

The model is built from its config on the meta device (no weights are read or
allocated), the recipe's method is applied, and its parameters become fake CPU tensors
(``torch._subclasses.fake_tensor``): shapes and dtypes without storage. A forward pass of
one micro-batch then dispatches through the same kernels as a real CPU pass -- the same
attention path, bf16 autocast's casts, PEFT's adapters, virtual tokens -- and every
tensor autograd saves for the backward pass is counted through
``torch.autograd.graph.saved_tensors_hooks``. Nothing is computed, so a 7B model plans
in seconds on a laptop.

Checked against real CPU passes (``tests/unit/test_plan.py``): the same saved tensors,
shape for shape.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils._pytree import tree_leaves

from tunesmith.config.methods import LoraMethod
from tunesmith.objectives.tasks import padding_free
from tunesmith.models.structure import find_blocks
from tunesmith.plan.work import WorkCounter
from tunesmith.train.precision import resolve_precision

# 4-bit NF4/FP4 storage per parameter: half a byte, plus one fp32 absmax per block of 64;
# double quantisation stores those absmaxes in 8 bits (blocks of 256 with an fp32 scale).
NF4_BYTES = 0.5 + 4 / 64
NF4_DOUBLE_QUANT_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)
MODEL_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass
class Trace:
    """The parameter and activation facts of one model + method + micro-batch shape."""

    total_params: int
    trainable_params: int
    weight_bytes: int        # the weights as held in memory (4-bit where QLoRA quantises)
    trainable_bytes: int     # bytes of the trained parameters (= their gradients)
    saved_bytes: int         # activations autograd keeps for the backward pass
    block_saved_bytes: int   # the part of it saved inside one transformer block
    block_input_bytes: int   # one block's input (what gradient checkpointing keeps per block)
    small_saved_bytes: int   # saved tensors below the allocator's mmap threshold (CPU heap; see plan/memory.py)
    logits_bytes: int        # the fp32 logits the loss reads (one copy)
    blocks: int
    matmul_params: int       # parameters in matrix products (the 2N of the FLOP count)
    bias_params: int         # bias terms of the base (BitFit needs some)
    hidden: int
    vocab: int
    # The work of one micro-batch's forward and backward and of one optimizer step: FLOPs,
    # random numbers, bytes moved (plan/work.py).
    forward_work: WorkCounter | None = None
    block_forward_work: WorkCounter | None = None  # the first block's share of forward_work
    backward_work: WorkCounter | None = None
    optimizer_work: WorkCounter | None = None


def model_config(source: str, trust_remote_code: bool = False):
    """The transformers config of a model folder or hub id (config.json only, no weights)."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)


def _meta_model(hf_config, head: str, num_labels: int, dtype: torch.dtype, trust_remote_code: bool) -> nn.Module:
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    if head == "classification":
        hf_config.num_labels = num_labels
        auto = AutoModelForSequenceClassification
    else:
        auto = AutoModelForCausalLM
    with torch.device("meta"):
        model = auto.from_config(hf_config, dtype=dtype, trust_remote_code=trust_remote_code)
    if getattr(hf_config, "pad_token_id", None) is None:
        hf_config.pad_token_id = 0  # decoder classifiers look up the last real token through it
    return model


def _traceable_method(method_cfg):
    """The method section to build on a meta model: QLoRA's adapters are LoRA's (its 4-bit
    storage is counted separately), and initialisations that read weights (PiSSA's SVD, a
    prompt's text) are replaced by shape-identical random ones."""
    if method_cfg.type == "qlora":
        fields = {k: v for k, v in method_cfg.model_dump().items() if k in LoraMethod.model_fields}
        return LoraMethod(**{**fields, "type": "lora", "init": "default"})
    if getattr(method_cfg, "init", None) in ("pissa", "text"):
        return method_cfg.model_copy(update={"init": "default" if method_cfg.type != "prompt" else "random"})
    return method_cfg


def _to_fake(model: nn.Module, mode) -> None:
    # Meta tensors would take the meta kernels (e.g. attention's math path, which saves the
    # full score matrix); fake CPU tensors take the CPU kernels a real run takes. Tied
    # weights stay tied (one fake parameter for both modules).
    fakes: dict[int, torch.Tensor] = {}
    for module in model.modules():
        for store, as_param in ((module._parameters, True), (module._buffers, False)):
            for name, t in list(store.items()):
                if t is None:
                    continue
                if id(t) not in fakes:
                    with mode:
                        fake = torch.empty(t.shape, dtype=t.dtype, device="cpu")
                    fakes[id(t)] = nn.Parameter(fake, requires_grad=t.requires_grad) if as_param else fake
                store[name] = fakes[id(t)]


def _weight_bytes(model: nn.Module, method_cfg) -> tuple[int, int, int, int]:
    """(total params, trainable params, weight bytes, trainable bytes), tied weights once."""
    from tunesmith.models.quantize import SKIP_MODULES

    seen: set[int] = set()
    total = trainable = weight = trained = 0
    quantised = method_cfg.type == "qlora"
    per_param = NF4_DOUBLE_QUANT_BYTES if quantised and method_cfg.double_quant else NF4_BYTES
    for module_name, module in model.named_modules():
        for p in module.parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            n = p.numel()
            total += n
            if p.requires_grad:
                trainable += n
                trained += n * p.element_size()
                weight += n * p.element_size()
            elif quantised and isinstance(module, nn.Linear) and "lora_" not in module_name \
                    and not module_name.endswith(SKIP_MODULES):
                weight += int(n * per_param)  # bitsandbytes' Linear4bit storage
            else:
                weight += n * p.element_size()
    return total, trainable, weight, trained


def trace_training(config, hf_config, rows: int, length: int, targets_per_row: int, num_labels: int = 2,
                   count_work: bool = True) -> Trace:
    """Count what training ``config`` keeps for one micro-batch of ``rows`` x ``length`` tokens,
    of which ``targets_per_row`` per row reach the LM head (causal LMs). ``count_work``: also
    run the fake backward pass and optimizer step and count their work (for step time)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from tunesmith.methods import apply_method

    head = config.model_task
    dtype = MODEL_DTYPES[config.model.dtype]
    model = _meta_model(hf_config, head, num_labels, dtype, config.model.trust_remote_code)
    model = apply_method(model, _traceable_method(config.method), head, total_steps=100)
    model.train()
    total, trainable, weight, trained = _weight_bytes(model, config.method)
    blocks = find_blocks(model)
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    _to_fake(model, mode)

    params = {id(p) for p in model.parameters()} | {id(b) for b in model.buffers()}
    saved: dict[int, tuple[torch.Tensor, bool]] = {}
    in_block = [0]

    # Tensors every block receives besides its hidden states (the rotary cos/sin, a mask) are
    # saved by every block but held once: they count outside the blocks, which a block
    # recomputed under checkpointing does not free.
    shared: set[int] = set()

    def pack(t: torch.Tensor):
        base = t._base if t._base is not None else t
        if id(base) not in params and id(base) not in saved:
            # the reference keeps ids unique
            saved[id(base)] = (base, in_block[0] == 1 and id(base) not in shared)
        return t

    # The first block's forward work, counted on its own as well: gradient checkpointing
    # runs the blocks' forward again, not the embeddings, head or loss.
    heap_limit = heap_threshold(config)
    block_work = WorkCounter(heap_limit)

    def enter_block(module, args, kwargs):
        in_block[0] = 1
        inputs.setdefault("x", args[0] if args else kwargs.get("hidden_states"))
        passed = tree_leaves((args[1:], {k: v for k, v in kwargs.items() if k != "hidden_states"}))
        shared.update(id(t._base if t._base is not None else t) for t in passed if isinstance(t, torch.Tensor))
        block_work.__enter__()

    def leave_block(module, args, output):
        in_block[0] = 2
        block_work.__exit__(None, None, None)

    # The first block's share and input stand for every block's (gradient checkpointing
    # keeps each block's input and recomputes one block at a time).
    inputs: dict = {}
    hooks = [blocks[0].register_forward_pre_hook(enter_block, with_kwargs=True),
             blocks[0].register_forward_hook(leave_block)]
    # The fake pass runs on the CPU: auto (when a plan did not settle it for its device) is this CPU's.
    precision = resolve_precision(config.train.precision, "cpu")[0]
    autocast = (torch.autocast("cpu", dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
                if precision != "fp32" else contextlib.nullcontext())
    forward_work = WorkCounter(heap_limit)
    with mode, forward_work, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast:
        loss = training_forward(model, head, rows, length, targets_per_row, padding_free(config))
    for h in hooks:
        h.remove()
    backward_work, optimizer_work = WorkCounter(heap_limit), WorkCounter(heap_limit)
    if count_work:
        with mode:
            with backward_work:
                loss.backward()
            with optimizer_work:
                _optimizer_step(model, config.train.optimizer)
    nbytes = {k: t.numel() * t.element_size() for k, (t, _) in saved.items()}
    x = inputs.get("x")
    return Trace(
        total_params=total, trainable_params=trainable, weight_bytes=weight, trainable_bytes=trained,
        saved_bytes=sum(nbytes.values()),
        small_saved_bytes=sum(n for n in nbytes.values() if n < heap_limit),
        block_saved_bytes=sum(nbytes[k] for k, (_, inside) in saved.items() if inside),
        block_input_bytes=x.numel() * x.element_size() if x is not None else 0,
        logits_bytes=4 * rows * (max(targets_per_row, 1) * hf_config.vocab_size if head == "causal_lm" else num_labels),
        blocks=len(blocks),
        matmul_params=_matmul_params(model),
        bias_params=sum(p.numel() for n, p in model.named_parameters() if n.endswith(".bias")),
        forward_work=forward_work, block_forward_work=block_work, backward_work=backward_work,
        optimizer_work=optimizer_work, hidden=getattr(hf_config, "hidden_size", 0),
        vocab=getattr(hf_config, "vocab_size", 0),
    )


def heap_threshold(config) -> int:
    """Allocations below this size come from glibc's heap (train.mmap_threshold_kb; glibc's
    dynamic threshold grows up to 32 MiB without it)."""
    kb = config.train.mmap_threshold_kb
    return kb * 1024 if kb else 32 * 2**20


def training_forward(model: nn.Module, head: str, rows: int, length: int, targets_per_row: int,
                     packed: bool = False) -> torch.Tensor:
    """A training forward pass of ``rows`` x ``length`` tokens and its loss, as the objectives
    run it: a causal LM's head only over the trained positions, the loss on fp32 logits.
    The trained positions are given as an index tensor, as the objectives give them: the
    head then reads a gathered, contiguous copy of the hidden states (a plain matrix
    product; a slice of them would take a slower batched product)."""
    ids = torch.zeros(rows, length, dtype=torch.long)

    def last(count: int, total: int) -> torch.Tensor:
        return torch.arange(total - count, total)

    if head == "causal_lm" and packed:
        # Padding-free batches: one row of the examples back to back, positions restarting.
        positions = torch.arange(length).repeat(rows)[None]
        logits = model(input_ids=ids.reshape(1, -1), position_ids=positions,
                       logits_to_keep=last(max(targets_per_row, 1) * rows, rows * length), use_cache=False).logits
    elif head == "causal_lm":
        # A padded batch (its shortest row one token short): the attention takes a mask, as in training.
        mask = torch.ones(rows, length, dtype=torch.long)
        mask[-1, -1] = 0
        logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=last(max(targets_per_row, 1), length),
                       use_cache=False).logits
    else:
        logits = model(input_ids=ids).logits
    logits = logits.float()
    labels = torch.zeros(logits.shape[:-1], dtype=torch.long)
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))


def _optimizer_step(model: nn.Module, kind: str) -> None:
    # The run's own optimizer, so its elementwise work is counted as it really runs
    # (8-bit AdamW's kernels take no fake tensors: AdamW's elementwise passes stand in).
    from tunesmith.train.optim import build_optimizer

    params = [p for p in model.parameters() if p.requires_grad]
    torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
    build_optimizer(model, 1e-4, 0.0, kind="adamw" if kind == "adamw_8bit" else kind).step()


def _matmul_params(model: nn.Module) -> int:
    # Embedding lookups cost no FLOPs; every linear layer's weight costs 2 FLOPs per token.
    # A tied LM head is a matmul even though its weight is the embedding's.
    seen: set[int] = set()
    count = 0
    for module in model.modules():
        if isinstance(module, nn.Linear) and id(module.weight) not in seen:
            seen.add(id(module.weight))
            count += module.weight.numel()
    return count

