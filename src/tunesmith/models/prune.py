"""Structured pruning: score attention heads and FFN neurons, then remove the weakest.

The matrices really shrink (fewer rows and columns), so the pruned model is faster, not
just sparser; the config is edited to match and the model is rebuilt from it, so it saves
and reloads as a plain transformers model. Every block keeps the same number of units:
transformers configs hold one ``intermediate_size`` and one head count for all layers
(transformers 5 dropped per-layer ``pruned_heads``); which units a block keeps is its own.

Two layouts are known: BERT-style encoders (FFN neurons only: their attention derives the
head size from ``hidden_size / num_attention_heads``, so fewer heads of the same size
cannot be written in their config) and Llama-style decoders (FFN neurons and query heads,
with whole key/value groups when grouped-query attention leaves no other way).
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass

import torch
from torch import nn

from tunesmith.errors import ConfigError
from tunesmith.models.structure import find_blocks

STRUCTURES = ("ffn", "heads", "both")


@dataclass(frozen=True)
class Block:
    """Names (in ``model.named_modules()``) of one block's prunable linear layers."""

    ffn_in: tuple[str, ...]  # their output rows are the FFN neurons (BERT intermediate; Llama gate + up)
    ffn_out: str  # its input columns are the FFN neurons
    q: str | None = None
    k: str | None = None
    v: str | None = None
    attn_out: str | None = None  # its input columns are the heads' outputs, head after head


@dataclass(frozen=True)
class Layout:
    """Where the prunable units of a model are."""

    kind: str  # "bert" | "llama"
    blocks: tuple[Block, ...]
    neurons: int  # FFN neurons per block
    heads: int  # query heads per block
    kv_heads: int
    head_dim: int

    @property
    def prunes_heads(self) -> bool:
        return self.kind == "llama"


def find_layout(model: nn.Module) -> Layout:
    """The prunable units of ``model`` (a transformers classifier or causal LM).

    Raises:
        ConfigError: an architecture whose blocks are neither BERT- nor Llama-style.
    """
    names = {id(m): n for n, m in model.named_modules()}
    blocks, kind = [], None
    for block in find_blocks(model):
        prefix = names[id(block)]
        if hasattr(block, "intermediate") and hasattr(block, "output") and hasattr(block, "attention"):
            kind = "bert"
            blocks.append(Block((f"{prefix}.intermediate.dense",), f"{prefix}.output.dense"))
        elif hasattr(block, "mlp") and hasattr(block, "self_attn") and hasattr(block.mlp, "down_proj"):
            kind = "llama"
            a = f"{prefix}.self_attn"
            blocks.append(Block((f"{prefix}.mlp.gate_proj", f"{prefix}.mlp.up_proj"), f"{prefix}.mlp.down_proj",
                                f"{a}.q_proj", f"{a}.k_proj", f"{a}.v_proj", f"{a}.o_proj"))
        else:
            raise ConfigError(f"Pruning knows BERT- and Llama-style blocks; {type(model).__name__}'s are "
                              f"{type(block).__name__}.", "Export this model another way (merged, int8, gguf).")
    config = model.config
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return Layout(kind, tuple(blocks), config.intermediate_size, heads,
                  getattr(config, "num_key_value_heads", None) or heads, head_dim)


def check_structure(layout: Layout, structure: str) -> None:
    """Refuse head pruning where the model's config cannot express it.

    Raises:
        ConfigError: ``structure`` is unknown, or asks for heads of a BERT-style model.
    """
    if structure not in STRUCTURES:
        raise ConfigError(f"Unknown --structure {structure!r}.", f"Use one of: {', '.join(STRUCTURES)}.")
    if structure != "ffn" and not layout.prunes_heads:
        raise ConfigError(
            "This model's attention derives its head size from hidden_size / num_attention_heads, so a model "
            "with fewer heads of the same size cannot be saved as a plain transformers model (transformers 5 "
            "removed per-layer pruned_heads).", "Use --structure ffn for BERT-style models.")


# ----------------------------------------------------------------------------- masks


@contextlib.contextmanager
def unit_masks(model: nn.Module, layout: Layout, ffn: torch.Tensor, heads: torch.Tensor | None):
    """Multiply each FFN neuron's and each head's output by ``ffn[block, neuron]`` and
    ``heads[block, head]`` while the context is open (hooks on the layers that read them)."""
    modules = dict(model.named_modules())
    handles = []

    def scale(mask_row, group: int):
        def hook(_module, args):
            x = args[0]
            shaped = x.reshape(*x.shape[:-1], -1, group)  # (..., units, unit width)
            return (shaped * mask_row.to(x.dtype)[:, None]).reshape(x.shape), *args[1:]
        return hook

    try:
        for i, block in enumerate(layout.blocks):
            handles.append(modules[block.ffn_out].register_forward_pre_hook(scale(ffn[i], 1)))
            if heads is not None:
                handles.append(modules[block.attn_out].register_forward_pre_hook(scale(heads[i], layout.head_dim)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def keep_masks(layout: Layout, keep: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
    """0/1 masks from ``keep`` (``{"ffn": [[neuron, ...] per block], "heads": [...] or None}``)."""
    ffn = torch.zeros(len(layout.blocks), layout.neurons)
    for i, kept in enumerate(keep["ffn"]):
        ffn[i, kept] = 1
    heads = None
    if keep.get("heads") is not None:
        heads = torch.zeros(len(layout.blocks), layout.heads)
        for i, kept in enumerate(keep["heads"]):
            heads[i, kept] = 1
    return ffn, heads


# ----------------------------------------------------------------------------- importance


def taylor_importance(model: nn.Module, layout: Layout, objective, batches) -> dict[str, torch.Tensor]:
    """First-order importance of every unit: |dLoss/dmask| summed over ``batches``.

    A mask multiplying a unit's output has the gradient sum(activation x its gradient), so
    this is the "gradient x activation" score (Michel et al. 2019, Molchanov et al. 2019):
    the loss change expected from removing the unit. ``objective.loss_sum`` gives the loss.
    """
    device = next(model.parameters()).device
    ffn = torch.ones(len(layout.blocks), layout.neurons, device=device, requires_grad=True)
    heads = torch.ones(len(layout.blocks), layout.heads, device=device, requires_grad=True) \
        if layout.prunes_heads else None
    scores = {"ffn": torch.zeros(ffn.shape), "heads": torch.zeros(heads.shape) if heads is not None else None}
    trainable = [p for p in model.parameters() if p.requires_grad]
    for p in trainable:  # only the masks need gradients
        p.requires_grad_(False)
    model.eval()  # no dropout: the score is of the model as it will run
    try:
        with unit_masks(model, layout, ffn, heads):
            for batch in batches:
                loss = objective.loss_sum(model, {k: v.to(device) for k, v in batch.items()})
                masks = [m for m in (ffn, heads) if m is not None]
                grads = torch.autograd.grad(loss, masks)
                scores["ffn"] += grads[0].abs().cpu()
                if heads is not None:
                    scores["heads"] += grads[1].abs().cpu()
    finally:
        for p in trainable:
            p.requires_grad_(True)
    return scores


def magnitude_importance(model: nn.Module, layout: Layout) -> dict[str, torch.Tensor]:
    """Weight-norm importance: a unit's input-weight norm times its output-weight norm."""
    modules = dict(model.named_modules())
    ffn, heads = [], []
    with torch.no_grad():
        for block in layout.blocks:
            w_in = sum(modules[n].weight.float().norm(dim=1) for n in block.ffn_in)
            ffn.append(w_in * modules[block.ffn_out].weight.float().norm(dim=0))
            if layout.prunes_heads:
                q = modules[block.q].weight.float().reshape(layout.heads, -1).norm(dim=1)
                o = modules[block.attn_out].weight.float().T.reshape(layout.heads, -1).norm(dim=1)
                heads.append(q * o)
    return {"ffn": torch.stack(ffn).cpu(), "heads": torch.stack(heads).cpu() if heads else None}


# ----------------------------------------------------------------------------- choosing and removing


def head_shape(layout: Layout, sparsity: float) -> tuple[int, int]:
    """``(kv groups kept, query heads kept per group)`` closest to removing ``sparsity`` of the heads.

    Every block keeps the same shape (one config for all); grouped-query attention needs each
    kept key/value group to serve the same number of query heads.
    """
    group = layout.heads // layout.kv_heads
    target = (1 - sparsity) * layout.heads
    options = [(g * h, g, h) for g in range(1, layout.kv_heads + 1) for h in range(1, group + 1)]
    _, groups, per_group = min(options, key=lambda o: (abs(o[0] - target), -o[0], -o[1]))
    return groups, per_group


def choose_units(layout: Layout, scores: dict, sparsity: float, structure: str) -> dict:
    """Which units each block keeps: ``{"ffn": [[...]], "heads": [[...]] or None}`` (sorted indices)."""
    if not 0 < sparsity < 1:
        raise ConfigError(f"--sparsity must be between 0 and 1 (got {sparsity}).",
                          "0.25 removes a quarter of the chosen units.")
    n_ffn = layout.neurons if structure == "heads" else max(1, round((1 - sparsity) * layout.neurons))
    keep = {"ffn": [sorted(s.topk(n_ffn).indices.tolist()) for s in scores["ffn"]], "heads": None}
    if structure != "ffn":
        groups, per_group = head_shape(layout, sparsity)
        size = layout.heads // layout.kv_heads
        keep["heads"] = []
        for s in scores["heads"]:
            by_group = s.reshape(layout.kv_heads, size)
            best = by_group.topk(per_group, dim=1)
            chosen = sorted(best.values.sum(1).topk(groups).indices.tolist())
            keep["heads"].append([g * size + h for g in chosen for h in sorted(best.indices[g].tolist())])
    return keep


def pruned_copy(model: nn.Module, layout: Layout, keep: dict) -> nn.Module:
    """A new model of the same class with only the kept units: its config edited, its
    weights sliced from ``model``'s (which is left as it was)."""
    config = copy.deepcopy(model.config)
    config.intermediate_size = len(keep["ffn"][0])
    if keep.get("heads") is not None:
        size = layout.heads // layout.kv_heads
        kept_groups = sorted({h // size for h in keep["heads"][0]})
        config.num_attention_heads = len(keep["heads"][0])
        config.num_key_value_heads = len(kept_groups)
        config.head_dim = layout.head_dim  # no longer hidden_size / num_attention_heads
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for i, block in enumerate(layout.blocks):
        neurons = torch.tensor(keep["ffn"][i])
        for name in block.ffn_in:
            _slice(state, name, rows=neurons)
        _slice(state, block.ffn_out, cols=neurons)
        if keep.get("heads") is not None:
            heads = keep["heads"][i]
            size = layout.heads // layout.kv_heads
            groups = sorted({h // size for h in heads})
            _slice(state, block.q, rows=_unit_rows(heads, layout.head_dim))
            _slice(state, block.k, rows=_unit_rows(groups, layout.head_dim))
            _slice(state, block.v, rows=_unit_rows(groups, layout.head_dim))
            _slice(state, block.attn_out, cols=_unit_rows(heads, layout.head_dim))
    # Built on the CPU, not on the meta device: non-persistent buffers (rotary frequencies)
    # are not in the state dict and must be computed by the constructor.
    pruned = type(model)(config).to(next(model.parameters()).dtype)
    pruned.load_state_dict(state, strict=True)
    return pruned.eval()


def _unit_rows(units: list[int], width: int) -> torch.Tensor:
    return torch.cat([torch.arange(u * width, (u + 1) * width) for u in units])


def _slice(state: dict, name: str, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None) -> None:
    weight = state[f"{name}.weight"]
    if rows is not None:
        state[f"{name}.weight"] = weight[rows].contiguous()
        if f"{name}.bias" in state:
            state[f"{name}.bias"] = state[f"{name}.bias"][rows].contiguous()
    if cols is not None:
        state[f"{name}.weight"] = weight[:, cols].contiguous()


def count_parameters(model: nn.Module) -> int:
    """Distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def drop_layers(model: nn.Module, keep_every: int) -> tuple[nn.Module, list[int]]:
    """A shallower copy of ``model`` keeping blocks ``k-1, 2k-1, ...`` (and always the last,
    which feeds the head it was trained with), initialised from their weights; returns
    ``(student, kept block indices)``. The config's layer count is edited, so it saves and
    reloads as a plain transformers model."""
    blocks = find_blocks(model)
    count = len(blocks)
    kept = [i for i in range(count) if (i + 1) % keep_every == 0]
    if not kept or kept[-1] != count - 1:
        kept.append(count - 1)
    prefix = {id(m): n for n, m in model.named_modules()}[id(blocks)] + "."
    config = copy.deepcopy(model.config)
    config.num_hidden_layers = len(kept)
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[i] for i in kept]
    state = {}
    for key, value in model.state_dict().items():
        if key.startswith(prefix):
            index, rest = key[len(prefix):].split(".", 1)
            if int(index) not in kept:
                continue
            key = f"{prefix}{kept.index(int(index))}.{rest}"
        state[key] = value.clone()
    student = type(model)(config).to(next(model.parameters()).dtype)
    student.load_state_dict(state, strict=True)
    return student, kept
