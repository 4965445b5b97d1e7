"""One optimizer step's work: forward and backward over a window of micro-batches, then
(when the guard accepts it) the update.

The loss of a window is normalised by the targets of the *whole* window, summed over
every process, so the update does not depend on how the examples were split into
micro-batches or processes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from tunesmith.models.structure import shallow_parameters
from tunesmith.train.precision import autocast


@dataclass
class StepResult:
    """What one window's forward/backward measured (gradients are left on the parameters)."""

    position: list[int]  # [epoch, window index]
    loss: float
    grad_norm: float
    tokens: int
    samples: int


class StepRunner:
    """Runs windows through the model for one training run."""

    def __init__(self, model, objective, cfg, backend, hooks, optimizer, scheduler):
        self.model, self.objective, self.cfg, self.backend = model, objective, cfg, backend
        self.hooks, self.optimizer, self.scheduler = hooks, optimizer, scheduler
        self.unwrapped = backend.unwrap(model)
        # Only training's forward passes go through the compiled module; evaluation,
        # checkpoints and method hooks keep using the plain one.
        self.forward_model = torch.compile(model, dynamic=True) if cfg.compile else model
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.shallow = shallow_parameters(self.unwrapped, cfg.shallow_layers) if cfg.shallow_grad_scale < 1 else []
        # Dynamic loss scaling only for fp16: bf16 and fp32 have fp32's range and need none.
        self.scaler = torch.amp.GradScaler(backend.device.type) if cfg.precision == "fp16" else None

    def _backward(self, loss: torch.Tensor) -> None:
        self.backend.backward(self.scaler.scale(loss) if self.scaler else loss)

    def compute(self, window: list[list[int]], features: list[dict], position: list[int]) -> StepResult:
        """Forward and backward over this process's micro-batches of ``window``; clip the gradients."""
        device, cfg, objective = self.backend.device, self.cfg, self.objective
        batches = [objective.collate([features[i] for i in idx]) for idx in self.backend.shard(window)]
        if hasattr(objective, "rollout"):
            # An on-policy objective (GRPO) samples its answers first: they are what is counted and trained on.
            batches = [objective.rollout(self.unwrapped, b) for b in batches]
        targets = max(self.backend.all_reduce_sum(sum(objective.count_targets(b) for b in batches)), 1)
        step_loss = torch.zeros((), device=device)
        tokens = samples = 0
        for batch in batches:
            # Counted on the host before the copy: on a GPU, reading them back would be a sync.
            tokens += int(batch["num_tokens"]) if "num_tokens" in batch else int(batch["attention_mask"].sum())
            # A packed row holds several examples; samples/s counts examples.
            samples += int(batch["num_examples"]) if "num_examples" in batch else batch["input_ids"].shape[0]
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            with autocast(device, cfg.precision):
                loss = objective.loss_sum(self.forward_model, batch) / targets
            self._backward(loss)
            step_loss += loss.detach()
        if self.hooks.extra_loss:
            with autocast(device, cfg.precision):
                penalty = self.hooks.extra_loss(self.unwrapped)
            self._backward(penalty)
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        for p in self.shallow:
            if p.grad is not None:
                p.grad.mul_(cfg.shallow_grad_scale)
        grad_norm = self.backend.clip_grad_norm(self.params, cfg.max_grad_norm)
        return StepResult(position, float(self.backend.all_reduce_sum(step_loss)), grad_norm,
                          self.backend.all_reduce_sum(tokens), self.backend.all_reduce_sum(samples))

    def fp16_overflow(self, result: StepResult) -> bool:
        """An fp16 overflow is the loss scaler's business (it skips the update and lowers the
        scale), not the guard's."""
        return bool(self.scaler) and not math.isfinite(result.grad_norm)

    def apply(self, step: int) -> None:
        """The update: optimizer step, the method's after-step hook, schedule, clear gradients."""
        if self.scaler:
            self.scaler.step(self.optimizer)  # skips the update itself when fp16 gradients overflowed
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.hooks.after_optimizer_step:
            self.hooks.after_optimizer_step(self.unwrapped, step)  # needs this step's gradients: before zero_grad
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
