"""Regularisers against forgetting (``train.regularize``): EWC and L2-SP.

Both add ``weight/2 * sum(F * d**2)`` to each optimizer step's loss, where ``d`` is how far
the trained weights moved from where they started and ``F`` is 1 for L2-SP, and for EWC
the diagonal Fisher information of the starting model on general data (mean squared
gradient of each example's answer loss), scaled to mean 1 so a weight means about the same
total pull for both.

"The weights" depend on the method:
- full, freeze, BitFit: the trained parameters themselves, ``d = w - w_start``;
- LoRA: the change the adapter makes to each adapted base matrix, ``d = s B A`` (s the
  LoRA scale). Forming ``B A`` for every matrix at every step would cost as much memory
  traffic as a full fine-tune, so the sum is taken in the adapter's rank instead:
  ``sum(F * (s B A)**2) = s**2 * sum((B' diag(R) B) * (A diag(C) A'))``, exact for L2-SP
  (R = C = 1) and, for EWC, with each matrix's Fisher in the rank-one form
  ``F_ij ~ R_i C_j / S`` (its row sums R, column sums C and total S: the same total
  importance, spread as rows times columns, in the spirit of K-FAC's factored Fisher);
- other PEFT methods (IA3, prompts, prefixes, bottleneck adapters, and AdaLoRA's SVD
  form): the adapter's own tensors, ``d = t - t_start``.
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
    """One regularised tensor: ``value()`` is its ``sum(F * d**2)`` now."""

    name: str
    value: Callable[[], torch.Tensor]
    elements: int


@dataclass
class Regularizer:
    """The penalty of one run; ``penalty(model)`` is the loop's ``extra_loss``."""

    kind: str
    weight: float
    terms: list[Term]
    info: dict = field(default_factory=dict)
    fisher: dict | None = None  # ewc: per tensor, or (row sums, column sums, total) per LoRA-adapted matrix

    def penalty(self, model: nn.Module | None = None) -> torch.Tensor:
        return 0.5 * self.weight * sum(term.value() for term in self.terms)


def lora_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The plain LoRA linear layers of a PEFT model (``lora_A``/``lora_B`` matrices; AdaLoRA's
    SVD layers and LoRA on embeddings are regularised as tensors instead)."""
    from peft.tuners.lora import Linear

    return [(name, m) for name, m in model.named_modules()
            if type(m) is Linear and m.active_adapters and m.active_adapters[0] in m.lora_A]


def build_regularizer(cfg, model: nn.Module, fisher_batches=None) -> Regularizer:
    """The regulariser of ``cfg`` (``train.regularize``) for ``model`` as it starts training.

    ``fisher_batches``: ewc's general data, an iterable of ``(batch, loss_fn)`` where
    ``loss_fn(model, batch)`` is one example's mean answer loss.
    """
    layers = lora_layers(model)
    covered = {id(p) for _, m in layers for p in _lora_pair(m)}
    tensors = {name: p for name, p in model.named_parameters() if p.requires_grad and id(p) not in covered}
    fisher = _fisher(model, layers, tensors, fisher_batches) if cfg.type == "ewc" else None
    terms = [_lora_term(name, m, fisher) for name, m in layers]
    for name, p in tensors.items():
        start = p.detach().clone()
        f = fisher[name] if fisher else None
        terms.append(Term(name, (lambda p=p, s=start, f=f: (((p - s) ** 2) * f).sum() if f is not None
                                 else ((p - s) ** 2).sum()), p.numel()))
    info = {"type": cfg.type, "weight": cfg.weight, "tensors": len(terms), "elements": sum(t.elements for t in terms)}
    if fisher:
        info["fisher_samples"] = fisher["_samples"]
    return Regularizer(cfg.type, cfg.weight, terms, info, fisher)


def _lora_pair(layer) -> tuple[torch.Tensor, torch.Tensor]:
    adapter = layer.active_adapters[0]
    return layer.lora_A[adapter].weight, layer.lora_B[adapter].weight


def _lora_term(name: str, layer, fisher: dict | None) -> Term:
    """``sum(F * (s B A)**2)`` in the adapter's rank (see the module docstring)."""
    a, b = _lora_pair(layer)
    scale = layer.scaling[layer.active_adapters[0]]
    out_dim, in_dim = b.shape[0], a.shape[1]
    if fisher:
        rows, cols, total = fisher[name]
        if layer.fan_in_fan_out:  # the base matrix is stored (in, out): its rows are B A's columns
            rows, cols = cols, rows
    else:
        rows, cols, total = torch.ones(out_dim, device=b.device), torch.ones(in_dim, device=a.device), 1.0

    def value() -> torch.Tensor:
        left = b.T.float() @ (rows[:, None] * b.float())  # B' diag(R) B: r x r
        right = (a.float() * cols[None, :]) @ a.T.float()  # A diag(C) A': r x r
        return scale ** 2 * (left * right).sum() / total

    return Term(name + ".delta", value, out_dim * in_dim)


def _fisher(model: nn.Module, layers, tensors: dict, batches) -> dict:
    """Mean squared per-example gradients, scaled to mean 1 over every element: a tensor per
    regularised tensor, and (row sums, column sums, total) per LoRA-adapted base matrix.

    The base matrices' gradients are switched on for the estimate only, with the adapters
    off (the model as it starts); no dropout.
    """
    targets = {name: m.get_base_layer().weight for name, m in layers} | tensors
    was = {name: t.requires_grad for name, t in targets.items()}
    lora_names = {name for name, _ in layers}
    # Kept on the model's device: no host copy per example on a GPU.
    sums = {name: (torch.zeros(t.shape[0], device=t.device), torch.zeros(t.shape[1], device=t.device))
            if name in lora_names else torch.zeros_like(t, dtype=torch.float32) for name, t in targets.items()}
    context = model.disable_adapter() if layers and hasattr(model, "disable_adapter") else contextlib.nullcontext()
    training = model.training
    model.eval()
    count = 0
    try:
        for t in targets.values():
            t.requires_grad_(True)
        with context:
            for batch, loss_fn in batches:
                grads = torch.autograd.grad(loss_fn(model, batch), list(targets.values()), allow_unused=True)
                for name, g in zip(targets, grads):
                    if g is None:
                        continue
                    g2 = g.detach().float() ** 2
                    if name in lora_names:  # only the row and column sums are kept
                        sums[name][0].add_(g2.sum(dim=1))
                        sums[name][1].add_(g2.sum(dim=0))
                    else:
                        sums[name] += g2
                count += 1
    finally:
        for name, t in targets.items():
            t.requires_grad_(was[name])
        model.train(training)
    if not count:
        raise ValueError("ewc: no general rows to estimate the Fisher on")
    total = sum(float(s[0].sum()) if name in lora_names else float(s.sum()) for name, s in sums.items())
    elements = sum(t.numel() for t in targets.values())
    scale = elements / total if total > 0 else 0.0  # mean 1 over every element (the count cancels out)
    fisher: dict = {}
    for name, s in sums.items():
        if name in lora_names:
            rows, cols = s[0] * scale, s[1] * scale
            fisher[name] = (rows, cols, max(float(rows.sum()), 1e-30))
        else:
            fisher[name] = s * scale
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
