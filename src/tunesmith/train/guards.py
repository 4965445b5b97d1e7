"""Numerical-health guard: decide whether a step's loss and gradients can be trusted.

The guard only judges; the loop acts (skip the batch, roll back, stop). Keeping the
decision here makes it testable with plain numbers.
"""

from __future__ import annotations

import math
import statistics
from collections import deque

from tunesmith.errors import TunesmithError


class GuardStop(TunesmithError):
    """The run kept diverging after the allowed rollbacks."""


class HealthGuard:
    """Tracks recent accepted losses and recent skips for one run."""

    def __init__(self, cfg, spikes: bool = True):
        self.cfg = cfg
        # False for an objective whose loss value says nothing about health (GRPO's surrogate
        # swings around zero with each sample's advantages): only non-finite values count.
        self.spikes = spikes
        self.history: deque[float] = deque(maxlen=cfg.window)
        self.skip_steps: deque[int] = deque()

    def verdict(self, loss: float, grad_norm: float) -> str | None:
        """Why this step must not be applied, or None when it is healthy."""
        if not self.cfg.enabled:
            return None
        if not math.isfinite(loss):
            return f"non-finite loss ({loss})"
        if not math.isfinite(grad_norm):
            return f"non-finite gradient norm ({grad_norm})"
        if self.spikes and len(self.history) >= self.cfg.min_history:
            mean = statistics.fmean(self.history)
            std = statistics.pstdev(self.history)
            median = statistics.median(self.history)
            if loss <= mean + self.cfg.min_delta:
                return None
            if std > 0 and loss > mean + self.cfg.spike_std * std:
                return f"loss spike: {loss:.4g} > mean {mean:.4g} + {self.cfg.spike_std:g} x std {std:.3g}"
            if median > 0 and loss > self.cfg.spike_factor * median:
                return f"loss spike: {loss:.4g} > {self.cfg.spike_factor:g} x median {median:.4g}"
        return None

    def accept(self, loss: float) -> None:
        """Record a healthy step's loss."""
        self.history.append(loss)

    def record_skip(self, step: int) -> bool:
        """Record a skipped batch at ``step``; True when the skips call for a rollback."""
        self.skip_steps.append(step)
        while self.skip_steps and self.skip_steps[0] <= step - self.cfg.skip_window:
            self.skip_steps.popleft()
        return len(self.skip_steps) >= self.cfg.max_skips

    def after_rollback(self) -> None:
        """Forget the skips that caused a rollback (and the loss history of the abandoned path)."""
        self.skip_steps.clear()
        self.history.clear()
