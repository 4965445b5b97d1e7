"""Going back: restore a checkpoint (resume, or a rollback after repeated trouble), and
the handling of a step the guard refused.

Before the first checkpoint exists, the rollback target is the initial trainable
weights, kept in memory. A rollback keeps the guard's memory (which windows were
skipped, how many rollbacks, the lowered learning rate); a resume takes the
checkpoint's own.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from tunesmith.train.checkpoint import latest_valid_checkpoint, load_checkpoint
from tunesmith.train.guards import GuardStop
from tunesmith.train.state import LoopState


class Restorer:
    """Puts the model, optimizer, scheduler, loss scaler and method state back to a checkpoint."""

    def __init__(self, model, params: list, optimizer, scheduler, scaler, hooks):
        self.model, self.params, self.optimizer, self.scheduler, self.scaler = model, params, optimizer, scheduler, scaler
        self.hooks = hooks
        self.base_lrs = list(scheduler.base_lrs)
        self.initial = {
            "weights": [p.detach().clone() for p in params],
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "method": copy.deepcopy(hooks.state(model)) if hooks.state else None,
        }

    def restore(self, path: Path | None, state: LoopState) -> LoopState:
        """Load ``path`` (None: the initial weights) and return the loop state to continue from."""
        keep = {"skipped": state.skipped, "rollbacks": state.rollbacks, "lr_scale": state.lr_scale}
        if path is None:
            with torch.no_grad():
                for p, w in zip(self.params, self.initial["weights"]):
                    p.copy_(w)
            self.optimizer.load_state_dict(self.initial["optimizer"])
            self.scheduler.load_state_dict(self.initial["scheduler"])
            if self.hooks.state:
                self.hooks.load_state(self.model, copy.deepcopy(self.initial["method"]))
            state = LoopState(**keep)
        else:
            manifest = load_checkpoint(path, self.model, self.optimizer, self.scheduler, self.scaler)
            if self.hooks.state and manifest.get("method_state") is not None:
                self.hooks.load_state(self.model, manifest["method_state"])
            state = LoopState(**manifest["state"])
            if keep["rollbacks"] > state.rollbacks:  # a rollback, not a resume: keep the guard's memory
                state.skipped, state.rollbacks, state.lr_scale = keep["skipped"], keep["rollbacks"], keep["lr_scale"]
        # The scheduler derives each lr from base_lrs, so lowering them lowers the whole schedule.
        self.scheduler.base_lrs = [b * state.lr_scale for b in self.base_lrs]
        for group, base, factor in zip(self.optimizer.param_groups, self.scheduler.base_lrs, self.scheduler.lr_lambdas):
            group["lr"] = base * factor(self.scheduler.last_epoch)
        return state


def refuse_step(problem: str, result, window: list, state: LoopState, guard, restorer: Restorer, logbook,
                cfg, run_dir: Path) -> LoopState:
    """Skip the window the guard refused; after too many skips roll back to the latest valid
    checkpoint with a lowered learning rate, and stop after too many rollbacks.

    Raises:
        GuardStop: still unhealthy after ``cfg.guard.max_rollbacks`` rollbacks.
    """
    restorer.optimizer.zero_grad(set_to_none=True)
    state.skipped.append(result.position)
    logbook.event(state.step, "skip", reason=problem, loss=result.loss, grad_norm=result.grad_norm,
                  epoch=result.position[0], window=result.position[1], sample_ids=[i for idx in window for i in idx])
    if not guard.record_skip(state.step):
        return state
    if state.rollbacks >= cfg.guard.max_rollbacks:
        logbook.event(state.step, "stop", reason=f"still unhealthy after {state.rollbacks} rollbacks")
        raise GuardStop(
            f"Training kept diverging at step {state.step} ({problem}) after "
            f"{state.rollbacks} rollbacks; see {run_dir / 'events.jsonl'}.",
            "Lower train.lr, raise train.adam_epsilon, set train.shallow_grad_scale, "
            "or check the data rows listed in events.jsonl.",
        )
    target = latest_valid_checkpoint(run_dir)
    state.rollbacks += 1
    state.lr_scale *= cfg.guard.rollback_lr_factor
    from_step = state.step
    state = restorer.restore(target, state)
    guard.after_rollback()
    # The abandoned steps will be logged again; events.jsonl keeps the record.
    logbook.rewind(state.step)
    logbook.event(state.step, "rollback", from_step=from_step, to_step=state.step, lr_scale=state.lr_scale,
                  checkpoint=str(target) if target else "initial weights")
    return state
