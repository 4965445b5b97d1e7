"""Bottleneck adapters: Houlsby (2019), Pfeiffer (2020) and parallel adapters (He et al. 2021).

An adapter is a small bottleneck MLP, ``up(act(down(h)))``, inserted into every
transformer block while the base model stays frozen. Its ``up`` projection starts at
zero, so a freshly adapted model computes exactly what the base model computes.

Placement (hooks on the base modules; the adapters are child modules of each block,
named ``adapter_attn`` / ``adapter_ffn``, so they show up in ``named_parameters`` and
``state_dict`` under names like ``bert.encoder.layer.0.adapter_ffn.down.weight``):

* **houlsby**, sequential, two per block: ``h = h + adapter(h)`` on the output of the
  attention output projection and on the output of the feed-forward output
  projection, i.e. before the block's dropout / residual add / LayerNorm.
* **pfeiffer**, sequential, one per block: the feed-forward one only.
* **parallel**, one per block, beside the feed-forward network:
  ``ffn_out = ffn(x) + adapter(x)`` where ``x`` is the FFN's input.

Per architecture:

========  ====================================  ==========================================
model     attention output (houlsby)            feed-forward output / parallel FFN
========  ====================================  ==========================================
BERT      ``attention.output.dense``            ``output.dense``; parallel reads the input
                                                of ``intermediate`` and adds at
                                                ``output.dense`` (before dropout + LN)
Llama     ``self_attn.o_proj``                  ``mlp.down_proj``; parallel reads the input
                                                of ``mlp`` and adds to its output
other     ``o_proj`` / ``out_proj`` /           ``down_proj`` / ``fc2`` / ``output.dense``
          ``attention.output.dense``            / ``mlp``; parallel: ``mlp`` in→out,
                                                ``intermediate``→``output.dense``,
                                                ``fc1``→``fc2``
========  ====================================  ==========================================

Names are matched as suffixes of the module path inside a block; feed-forward
candidates inside an attention sub-module are skipped (BERT's ``attention.output.dense``
also ends in ``output.dense``).

Hooks are callable objects rather than closures so that ``copy.deepcopy`` and pickling
of an adapted model keep each hook pointing at its own (copied) adapter.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from tunesmith.errors import ConfigError, ModelError
from tunesmith.models.structure import HEAD_NAMES, find_blocks

WEIGHTS_FILE = "adapter_weights.safetensors"
CONFIG_FILE = "tunesmith_adapter.json"

ATTN_ADAPTER = "adapter_attn"
FFN_ADAPTER = "adapter_ffn"

# Tried in order; the first candidate found in a block wins.
ATTN_OUTPUT_NAMES = ("attention.output.dense", "o_proj", "out_proj")
FFN_OUTPUT_NAMES = ("down_proj", "fc2", "output.dense", "mlp")
# (module whose input is the FFN input, module whose output gets the adapter added).
# A whole ``mlp`` module is preferred: one hook sees both its input and output.
PARALLEL_FFN_PAIRS = (("mlp", "mlp"), ("intermediate", "output.dense"), ("fc1", "fc2"))

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}


class BottleneckAdapter(nn.Module):
    """``scaling * up(act(down(x)))``; the caller adds the residual.

    ``up`` (weight and bias) starts at zero so the adapted model is initially identical
    to the base model. Parameters may live in a different dtype than the activations
    (e.g. float32 adapters on a bfloat16 base); inputs are cast in and the result cast
    back to the input dtype.
    """

    def __init__(self, hidden_size: int, bottleneck: int, non_linearity: str = "relu", scaling: float = 1.0):
        super().__init__()
        if non_linearity not in _ACTIVATIONS:
            raise ConfigError(
                f"Unknown adapter non_linearity {non_linearity!r}.", f"Use one of: {', '.join(_ACTIVATIONS)}."
            )
        self.hidden_size = hidden_size
        self.bottleneck = bottleneck
        self.scaling = scaling
        self.down = nn.Linear(hidden_size, bottleneck)
        self.act = _ACTIVATIONS[non_linearity]()
        self.up = nn.Linear(bottleneck, hidden_size)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.up(self.act(self.down(x.to(self.down.weight.dtype))))
        return (self.scaling * y).to(x.dtype)

    def extra_repr(self) -> str:
        return f"scaling={self.scaling}"


# ---------------------------------------------------------------------------------------
# Hooks


def _first_input(args: tuple, kwargs: dict) -> torch.Tensor:
    # Blocks call their sub-layers positionally, but accept a keyword call too.
    if args:
        return args[0]
    if "hidden_states" in kwargs:
        return kwargs["hidden_states"]
    return next(iter(kwargs.values()))


def _add(output, delta_fn):
    # Some modules (e.g. MoE MLPs) return a tuple whose first element is the hidden state.
    if isinstance(output, tuple):
        return (output[0] + delta_fn(output[0]),) + output[1:]
    return output + delta_fn(output)


class _SequentialHook:
    """Forward hook: ``out = out + adapter(out)``."""

    def __init__(self, adapter: BottleneckAdapter):
        self.adapter = adapter

    def __call__(self, module, args, output):
        return _add(output, self.adapter)


class _ParallelHook:
    """``out = ffn(x) + adapter(x)`` with ``x`` the FFN input.

    With one module (a whole ``mlp``), :meth:`forward_hook` sees both ``x`` and the
    output. With two (BERT ``intermediate`` -> ``output.dense``), :meth:`capture` stores
    ``x`` when the first runs and :meth:`add` consumes it when the second runs; both run
    in the same block call, also when gradient checkpointing recomputes the block.
    """

    def __init__(self, adapter: BottleneckAdapter):
        self.adapter = adapter
        self._x: torch.Tensor | None = None

    def forward_hook(self, module, args, kwargs, output):
        x = _first_input(args, kwargs)
        return _add(output, lambda _: self.adapter(x))

    def capture(self, module, args, kwargs):
        self._x = _first_input(args, kwargs)

    def add(self, module, args, output):
        x, self._x = self._x, None  # drop the reference so activations are not kept alive
        if x is None:
            raise RuntimeError("parallel adapter: the FFN output ran before its input was seen")
        return _add(output, lambda _: self.adapter(x))

    def __getstate__(self):
        # Never pickle / deepcopy a stashed activation.
        return {"adapter": self.adapter, "_x": None}


# ---------------------------------------------------------------------------------------
# Locating the sub-layers


def _in_attention(path: str) -> bool:
    return any("attn" in part or "attention" in part for part in path.split("."))


def _find(block: nn.Module, candidates: tuple[str, ...], skip_attention: bool) -> tuple[str, nn.Module] | None:
    """First module inside ``block`` whose path ends with a candidate (tried in order)."""
    named = [(n, m) for n, m in block.named_modules() if n]
    for cand in candidates:
        for name, module in named:
            if name != cand and not name.endswith("." + cand):
                continue
            if isinstance(module, BottleneckAdapter):
                continue
            if skip_attention and _in_attention(name):
                continue
            return name, module
    return None


def _hidden_size(model: nn.Module, target: nn.Module) -> int:
    # The adapter's width must match the tensor it is added to: a Linear's out_features
    # says so exactly; otherwise fall back to the model config.
    if isinstance(target, nn.Linear):
        return target.out_features
    size = getattr(getattr(model, "config", None), "hidden_size", None)
    if size is None:
        raise ConfigError(
            f"Could not tell the hidden size of {type(model).__name__} for its adapters.",
            "Use method.type: lora instead.",
        )
    return int(size)


def _unsupported(model: nn.Module, what: str) -> ConfigError:
    return ConfigError(
        f"Adapters are not supported for {type(model).__name__}: {what}.",
        "Use method.type: lora instead (it works with any model).",
    )


def _plan(model: nn.Module, style: str) -> list[dict]:
    """For each block: where each adapter goes. Resolved for all blocks before any change."""
    try:
        blocks = find_blocks(model)
    except ConfigError:
        raise _unsupported(model, "no stack of transformer blocks found") from None
    plan = []
    for i, block in enumerate(blocks):
        entry: dict = {"block": block}
        if style == "houlsby":
            found = _find(block, ATTN_OUTPUT_NAMES, skip_attention=False)
            if found is None:
                raise _unsupported(
                    model, f"block {i} has no attention output projection ({', '.join(ATTN_OUTPUT_NAMES)})"
                )
            entry["attn"] = found[1]
        if style in ("houlsby", "pfeiffer"):
            found = _find(block, FFN_OUTPUT_NAMES, skip_attention=True)
            if found is None:
                raise _unsupported(model, f"block {i} has no feed-forward output ({', '.join(FFN_OUTPUT_NAMES)})")
            entry["ffn"] = found[1]
        else:  # parallel
            for in_name, out_name in PARALLEL_FFN_PAIRS:
                src = _find(block, (in_name,), skip_attention=True)
                dst = _find(block, (out_name,), skip_attention=True)
                if src is not None and dst is not None:
                    entry["ffn_in"], entry["ffn"] = src[1], dst[1]
                    break
            else:
                pairs = ", ".join(f"{a}->{b}" for a, b in PARALLEL_FFN_PAIRS)
                raise _unsupported(model, f"block {i} has no recognisable feed-forward network ({pairs})")
        plan.append(entry)
    return plan


# ---------------------------------------------------------------------------------------
# Public API


def apply_adapters(model: nn.Module, method_cfg, task: str, **context) -> nn.Module:
    """Freeze ``model`` and insert bottleneck adapters into every transformer block.

    ``method_cfg`` is an :class:`~tunesmith.config.schema.AdapterMethod`. Adapters train;
    for ``task == "classification"`` the head modules (``classifier``, ``score``,
    ``pooler``) train too; for ``"causal_lm"`` the LM head stays frozen. The model is
    modified in place and returned; the config is kept as
    ``model.tunesmith_adapter_config`` (and the task as ``model.tunesmith_adapter_task``).
    ``context`` (e.g. ``total_steps`` from :func:`tunesmith.methods.apply_method`) is unused.
    """
    if task not in HEAD_NAMES:
        raise ConfigError(f"Unknown task {task!r} for adapters.", f"Use one of: {', '.join(HEAD_NAMES)}.")
    if is_adapter_model(model):
        raise ConfigError(f"{type(model).__name__} already has adapters.", "Apply adapters to a fresh base model.")
    style = method_cfg.style
    plan = _plan(model, style)

    model.requires_grad_(False)
    for entry in plan:
        block = entry["block"]
        # Adapters sit on the block's device. Keep them in float32 even on a half-precision
        # base: they are the weights being trained (the forward casts activations).
        ref = next(block.parameters(), None)
        device = ref.device if ref is not None else None

        def make(target: nn.Module) -> BottleneckAdapter:
            hidden = _hidden_size(model, target)
            adapter = BottleneckAdapter(
                hidden, max(1, hidden // method_cfg.reduction_factor), method_cfg.non_linearity, method_cfg.scaling
            )
            return adapter.to(device=device, dtype=torch.float32)

        if "attn" in entry:
            adapter = make(entry["attn"])
            block.add_module(ATTN_ADAPTER, adapter)
            entry["attn"].register_forward_hook(_SequentialHook(adapter))
        adapter = make(entry["ffn"])
        block.add_module(FFN_ADAPTER, adapter)
        if style == "parallel":
            hook = _ParallelHook(adapter)
            if entry["ffn_in"] is entry["ffn"]:
                entry["ffn"].register_forward_hook(hook.forward_hook, with_kwargs=True)
            else:
                entry["ffn_in"].register_forward_pre_hook(hook.capture, with_kwargs=True)
                entry["ffn"].register_forward_hook(hook.add)
        else:
            entry["ffn"].register_forward_hook(_SequentialHook(adapter))

    if task == "classification":
        for name, module in model.named_modules():
            if name.split(".")[-1] in HEAD_NAMES["classification"]:
                module.requires_grad_(True)

    model.tunesmith_adapter_config = method_cfg.model_dump()
    model.tunesmith_adapter_task = task
    return model


def is_adapter_model(model: nn.Module) -> bool:
    """Whether ``model`` carries bottleneck adapters (from :func:`apply_adapters`)."""
    return any(isinstance(m, BottleneckAdapter) for m in model.modules())


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every trainable parameter (adapters, plus the head for classification) by name, detached clones."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def save_adapters(model: nn.Module, directory) -> None:
    """Write ``adapter_weights.safetensors`` and ``tunesmith_adapter.json`` into ``directory``."""
    from safetensors.torch import save_file

    if not is_adapter_model(model):
        raise ModelError(f"{type(model).__name__} has no adapters to save.", "Call apply_adapters first.")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {n: t.contiguous() for n, t in adapter_state_dict(model).items()}
    save_file(state, str(directory / WEIGHTS_FILE))
    meta = {
        "config": model.tunesmith_adapter_config,
        "task": model.tunesmith_adapter_task,
        "names": sorted(state),
    }
    (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")


def load_adapters(model: nn.Module, directory) -> nn.Module:
    """Load adapters saved by :func:`save_adapters` into ``model`` and return it.

    A base model gets adapters applied from the saved config and task first; a model
    that already has adapters is loaded into as it is. Any missing, unexpected or
    wrongly shaped tensor raises :class:`~tunesmith.errors.ModelError`.
    """
    from safetensors.torch import load_file

    from tunesmith.config.methods import AdapterMethod

    directory = Path(directory)
    meta_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    for path in (meta_path, weights_path):
        if not path.is_file():
            raise ModelError(f"No adapter checkpoint at {directory}: {path.name} is missing.",
                             "Point to a folder written by save_adapters.")
    meta = json.loads(meta_path.read_text())
    if not is_adapter_model(model):
        apply_adapters(model, AdapterMethod(**meta["config"]), meta["task"])
    state = load_file(str(weights_path))

    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    missing = sorted(set(params) - set(state))
    unexpected = sorted(set(state) - set(params))
    wrong = sorted(n for n in set(params) & set(state) if params[n].shape != state[n].shape)
    if missing or unexpected or wrong:
        lines = []
        for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if names:
                shown = ", ".join(names[:5]) + (f" (+{len(names) - 5} more)" if len(names) > 5 else "")
                lines.append(f"{label}: {shown}")
        raise ModelError(
            f"Adapter checkpoint {directory} does not match {type(model).__name__}:\n" + "\n".join(lines),
            "Load it into the same base model with the same adapter settings it was trained with.",
        )
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(state[name])
    return model
