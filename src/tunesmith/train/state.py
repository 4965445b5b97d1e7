"""Where a run is (saved in every checkpoint), what it measured, and how it is stopped."""

from __future__ import annotations

import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM arrived; a checkpoint was saved at ``step``."""

    def __init__(self, step: int, checkpoint: Path | None):
        self.step, self.checkpoint = step, checkpoint
        super().__init__(f"interrupted at step {step}")


@dataclass
class LoopState:
    """Where the run is. Saved in every checkpoint manifest; restoring it resumes exactly."""

    step: int = 0  # optimizer steps applied
    epoch: int = 0
    cursor: int = 0  # windows of `epoch` already consumed (applied or skipped)
    samples: int = 0
    tokens: int = 0  # non-padding input tokens
    wall_s: float = 0.0  # training time, evaluation excluded
    log_loss: float = 0.0  # loss sum since the last metrics line
    log_steps: int = 0
    log_tokens: int = 0
    log_samples: int = 0
    skipped: list[list[int]] = field(default_factory=list)  # [epoch, cursor] of windows never to reuse
    rollbacks: int = 0
    lr_scale: float = 1.0
    best_metric: float | None = None
    best_step: int | None = None
    evals_without_improvement: int = 0
    early_stopped: bool = False

    def record_step(self, loss: float, tokens: int, samples: int) -> None:
        """Count an applied optimizer step toward the next metrics line."""
        self.step += 1
        self.log_loss += loss
        self.log_steps += 1
        self.log_tokens += tokens
        self.log_samples += samples

    def close_log_period(self) -> None:
        """Move the period's counts into the run totals after a metrics line is written."""
        self.samples += self.log_samples
        self.tokens += self.log_tokens
        self.log_loss, self.log_steps, self.log_tokens, self.log_samples = 0.0, 0, 0, 0


@dataclass
class TrainStats:
    """What the loop measured; the run turns it into summary.json."""

    steps: int = 0
    samples: int = 0
    tokens: int = 0
    wall_s: float = 0.0
    early_stopped: bool = False
    rollbacks: int = 0
    skipped_batches: int = 0
    best: dict | None = None
    optimizer_state_bytes: int = 0


class StopSignal:
    """Turns SIGINT/SIGTERM into a flag the loop checks between steps (main thread only)."""

    def __init__(self):
        self.requested = False
        self._previous: dict = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
