"""Regularisers against forgetting (``train.regularize``): EWC and L2-SP.

Both add ``weight/2 * sum(F * d**2)`` to each optimizer step's loss, where ``d`` is how far
the trained weights moved from where they started and ``F`` is 1 for L2-SP, and for EWC
the diagonal Fisher information of the starting model on general data (mean squared
gradient of each example's answer loss), scaled to mean 1 so a weight means about the same
total pull for both.

"The weights" depend on the method:
- full, freeze, BitFit: the trained parameters themselves, ``d = w - w_start``;
- LoRA family: the change the adapter makes to each adapted base matrix, ``d = B A *
  scaling`` (PEFT's ``get_delta_weight``), so the Fisher is the base matrix's (its
  gradient is taken once before training, then released);
- other PEFT methods (IA3, prompts, prefixes, bottleneck adapters): the adapter's own
  tensors, ``d = t - t_start``.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class Term:
    """One regularised tensor: how to get its change ``d`` now, and its Fisher (None: 1)."""

    name: str
    delta: Callable[[], torch.Tensor]
    fisher: torch.Tensor | None = None


@dataclass
class Regularizer:
    """The penalty of one run; ``penalty(model)`` is the loop's ``extra_loss``."""

    kind: str
    weight: float
    terms: list[Term]
    info: dict = field(default_factory=dict)

    def penalty(self, model: nn.Module | None = None) -> torch.Tensor:
        total = None
        for term in self.terms:
            d = term.delta().float()
            part = (d * d * term.fisher).sum() if term.fisher is not None else (d * d).sum()
            total = part if total is None else total + part
        return 0.5 * self.weight * total


def lora_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The LoRA-family layers of a PEFT model (their ``get_delta_weight`` gives B A * scaling)."""
    from peft.tuners.lora import LoraLayer

    return [(name, m) for name, m in model.named_modules() if isinstance(m, LoraLayer) and m.active_adapters]


def build_regularizer(cfg, model: nn.Module, fisher_batches=None) -> Regularizer:
    """The regulariser of ``cfg`` (``train.regularize``) for ``model`` as it starts training.

    ``fisher_batches``: ewc's general data, an iterable of ``(batch, loss_fn)`` where
    ``loss_fn(model, batch)`` is one example's mean answer loss.
    """
    layers = lora_layers(model)
    if layers:
        tensors = {f"{name}.delta": m for name, m in layers}
    else:
        tensors = {name: p for name, p in model.named_parameters() if p.requires_grad}
    fisher = _fisher(model, layers, fisher_batches) if cfg.type == "ewc" else {}
    terms = []
    for name, owner in tensors.items():
        if layers:
            adapter = owner.active_adapters[0]
            terms.append(Term(name, lambda m=owner, a=adapter: m.get_delta_weight(a), fisher.get(name)))
        else:
            start = owner.detach().clone()
            terms.append(Term(name, lambda p=owner, s=start: p - s, fisher.get(name)))
    info = {"type": cfg.type, "weight": cfg.weight, "tensors": len(terms),
            "elements": sum(t.delta().numel() for t in terms)}
    if fisher:
        info["fisher_samples"] = fisher.pop("_samples")
    return Regularizer(cfg.type, cfg.weight, terms, info)


def _fisher(model: nn.Module, layers, batches) -> dict[str, torch.Tensor]:
    """Mean squared per-example gradient of each regularised tensor, scaled to mean 1.

    For LoRA the tensors are the adapted base matrices: their gradients are switched on
    for the estimate only, with the adapters off (the model as it starts).
    """
    if layers:
        targets = {f"{name}.delta": m.get_base_layer().weight for name, m in layers}
    else:
        targets = {name: p for name, p in model.named_parameters() if p.requires_grad}
    was = {name: t.requires_grad for name, t in targets.items()}
    sums = {name: torch.zeros_like(t, dtype=torch.float32) for name, t in targets.items()}
    context = model.disable_adapter() if layers and hasattr(model, "disable_adapter") else contextlib.nullcontext()
    training = model.training
    model.eval()  # no dropout: the Fisher of the model itself
    count = 0
    try:
        for t in targets.values():
            t.requires_grad_(True)
        with context:
            for batch, loss_fn in batches:
                grads = torch.autograd.grad(loss_fn(model, batch), list(targets.values()), allow_unused=True)
                for name, g in zip(targets, grads):
                    if g is not None:
                        sums[name] += g.detach().float() ** 2
                count += 1
    finally:
        for name, t in targets.items():
            t.requires_grad_(was[name])
        model.train(training)
    if not count:
        raise ValueError("ewc: no general rows to estimate the Fisher on")
    # Scaled to mean 1 over every element (the count of examples cancels out).
    total = float(sum(s.sum() for s in sums.values()))
    scale = sum(s.numel() for s in sums.values()) / total if total > 0 else 0.0
    fisher: dict = {name: s * scale for name, s in sums.items()}
    fisher["_samples"] = count
    return fisher


def pick_rows(rows: list[dict], n: int, seed: int) -> list[dict]:
    """``n`` rows chosen with ``seed`` (all when fewer): the Fisher's sample."""
    if len(rows) <= n:
        return list(rows)
    return random.Random(seed).sample(rows, n)


# ewc on a chat run without regularize.data: general small talk in English and Chinese.
DEFAULT_GENERAL_CHATS = "builtin:chatterbot"


def regularizer_for(config, model: nn.Module, objective, shape: str, base_dir, device, log) -> Regularizer | None:
    """``train.regularize`` of the recipe ``config`` for ``model`` as it starts, or None.

    ewc's general rows are read from ``regularize.data`` (validated as the run's data
    shape), encoded by the run's ``objective``, and each scored alone.
    """
    cfg = config.train.regularize
    if cfg is None:
        return None
    batches = None
    if cfg.type == "ewc":
        from tunesmith.data.sources import load_records

        spec = cfg.data or DEFAULT_GENERAL_CHATS
        rows = pick_rows(load_records(spec, shape, base_dir=base_dir), cfg.fisher_samples, config.seed)
        features = objective.encode(rows)
        log(f"regularize: ewc Fisher on {len(features)} rows of {spec}")

        def example_loss(m, batch):
            return objective.loss_sum(m, batch) / max(objective.count_targets(batch), 1)

        batches = ((_to(objective.collate([f]), device), example_loss) for f in features)
    regularizer = build_regularizer(cfg, model, batches)
    if cfg.type == "ewc":
        regularizer.info["data"] = cfg.data or DEFAULT_GENERAL_CHATS
    return regularizer


def _to(batch: dict, device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
