"""The hooks a method may hand the loop, so the loop never needs to know the method."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn


@dataclass
class TrainingHooks:
    """What a method needs from the loop, without the loop knowing the method.

    ``extra_loss(model)`` is added to each optimizer step's loss (a regulariser);
    ``after_optimizer_step(model, step)`` runs after ``optimizer.step()`` and before the
    gradients are cleared; ``state``/``load_state`` carry the method's own running state
    through checkpoints so resuming stays exact; ``checkpoint_context(model)`` wraps the
    writing of a checkpoint's weights.
    """

    extra_loss: Callable[[nn.Module], torch.Tensor] | None = None
    after_optimizer_step: Callable[[nn.Module, int], None] | None = None
    state: Callable[[nn.Module], dict] | None = None
    load_state: Callable[[nn.Module, dict], None] | None = None
    checkpoint_context: Callable[[nn.Module], AbstractContextManager] | None = None


def with_extra_loss(hooks: TrainingHooks, loss: Callable[[nn.Module], torch.Tensor]) -> TrainingHooks:
    """``hooks`` with ``loss`` added to its extra loss (a method's own regulariser stays)."""
    import dataclasses

    own = hooks.extra_loss
    return dataclasses.replace(hooks, extra_loss=(lambda m: own(m) + loss(m)) if own else loss)
