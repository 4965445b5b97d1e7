"""When and how the loop writes checkpoints (only the main process writes)."""

from __future__ import annotations

import contextlib
from dataclasses import asdict
from pathlib import Path

from tunesmith.train.checkpoint import prune_checkpoints, save_checkpoint


class Checkpointer:
    """Saves ``checkpoints/step-N`` with the loop state and the method's own state, then
    prunes old ones (keeping the best when ``keep_best``)."""

    def __init__(self, run_dir: Path, cfg, model, optimizer, scheduler, scaler, hooks, config_hash, is_main=True):
        self.run_dir, self.cfg, self.model = run_dir, cfg, model
        self.optimizer, self.scheduler, self.scaler, self.hooks = optimizer, scheduler, scaler, hooks
        self.config_hash, self.is_main = config_hash, is_main

    def due(self, state, epoch_length: int, total_steps: int, stop_requested: bool) -> bool:
        """Whether this step ends with a checkpoint (by cadence, at an epoch end, at the
        last step when saving is on, or because a stop was requested)."""
        cfg = self.cfg
        return (bool(cfg.save_every and state.step % cfg.save_every == 0)
                or (cfg.save_every_epoch and state.cursor == epoch_length)
                or stop_requested or bool(cfg.save_every and state.step == total_steps))

    def save(self, state) -> Path:
        path = self.run_dir / "checkpoints" / f"step-{state.step}"
        if not self.is_main:
            return path
        extra = self.hooks.state(self.model) if self.hooks.state else None
        with self.hooks.checkpoint_context(self.model) if self.hooks.checkpoint_context else contextlib.nullcontext():
            path = save_checkpoint(self.run_dir, state.step, self.model, self.optimizer, self.scheduler, asdict(state),
                                   scaler=self.scaler, config_hash=self.config_hash, method_state=extra)
        protect = {state.best_step} if self.cfg.keep_best and state.best_step is not None else set()
        prune_checkpoints(self.run_dir, self.cfg.keep_last_n, protect)
        return path
