"""The training loop, readable top to bottom.

setup (or restore a checkpoint) -> for each optimizer step: the window's micro-batches ->
forward -> loss -> backward -> guard -> clip -> optimizer -> schedule -> log -> maybe
eval/checkpoint/early stop.

The loop knows nothing about the method (LoRA, full, ...) and talks to the task only
through the objective (``collate``, ``count_targets``, ``loss_sum``). Its pieces live
next to it: the data order (``sampler``), the state every checkpoint stores so a resumed
run reproduces the uninterrupted one step for step (``state``), one step's work
(``step``), the logs (``logbook``), going back (``rollback``), checkpoints (``saver``)
and the process layout (``backend``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from tunesmith.eval.metrics import improved
from tunesmith.train.backend import Backend
from tunesmith.train.guards import HealthGuard
from tunesmith.train.hooks import TrainingHooks
from tunesmith.train.logbook import Logbook
from tunesmith.train.memory import fix_mmap_threshold
from tunesmith.train.optim import build_optimizer, build_scheduler, state_bytes
from tunesmith.train.progress import Progress, resolve_mode
from tunesmith.train.rollback import Restorer, refuse_step
from tunesmith.train.sampler import EpochOrder, planned_steps
from tunesmith.train.saver import Checkpointer
from tunesmith.train.state import LoopState, StopSignal, TrainingInterrupted, TrainStats
from tunesmith.train.step import StepRunner


def train(model, objective, features: list[dict], cfg, *, lr: float, seed: int, run_dir: Path, backend: Backend,
          evaluate: Callable[[object], dict] | None = None, best_metric: str = "eval_loss",
          show_progress: bool | str = True, resume_from: Path | None = None, config_hash: str | None = None,
          hooks: TrainingHooks | None = None, trackers=None) -> TrainStats:
    """Train ``model`` in place on ``features`` according to ``cfg`` (a TrainConfig).

    ``show_progress``: True (a bar in a terminal, plain lines elsewhere), "lines", or False.
    ``evaluate(model)`` is called every ``cfg.eval_every`` steps; ``best_metric`` (its
    direction from the metric registry) ranks those evaluations for keep_best and early
    stopping. Logs go to metrics.jsonl / eval.jsonl / events.jsonl. ``resume_from`` is a
    checkpoint directory to continue from; ``hooks`` let a method act inside the loop;
    ``trackers`` (``train/tracking.Trackers``) receive a copy of every log line.

    Raises:
        TrainingInterrupted: after SIGINT/SIGTERM (a checkpoint was saved first).
        GuardStop: the loss kept diverging after ``cfg.guard.max_rollbacks`` rollbacks.
    """
    hooks = hooks or TrainingHooks()
    total_steps = planned_steps(len(features), cfg)
    if cfg.mmap_threshold_kb and backend.device.type == "cpu":
        fix_mmap_threshold(cfg.mmap_threshold_kb * 1024)
    optimizer = build_optimizer(model, lr, cfg.weight_decay, cfg.adam_epsilon, cfg.optimizer, cfg.betas, cfg.momentum,
                                cfg.layer_lr_decay)
    scheduler = build_scheduler(optimizer, cfg.scheduler, round(cfg.warmup_ratio * total_steps), total_steps)
    model, optimizer = backend.prepare(model, optimizer)
    runner = StepRunner(model, objective, cfg, backend, hooks, optimizer, scheduler)
    # Grouping by length only pays where batches are padded; otherwise keep batches fully random.
    grouped = cfg.group_by_length and getattr(objective, "pads_batches", True)
    # An objective whose features are not one token row (a reward model's pair) says how long one is.
    length = getattr(objective, "feature_length", lambda f: len(f["input_ids"]))
    order = EpochOrder(len(features), cfg, seed, [length(f) for f in features] if grouped else None)
    guard = HealthGuard(cfg.guard, spikes=getattr(objective, "loss_spikes_are_trouble", True))
    restorer = Restorer(runner.unwrapped, runner.params, optimizer, scheduler, runner.scaler, hooks)
    saver = Checkpointer(run_dir, cfg, runner.unwrapped, optimizer, scheduler, runner.scaler, hooks, config_hash,
                         backend.is_main)
    logbook = Logbook(run_dir, backend.is_main, trackers)
    state = LoopState()
    if resume_from is not None:
        state = restorer.restore(resume_from, state)
        logbook.rewind_all(state.step)
    logbook.open()
    progress = Progress(total_steps, state.step, resolve_mode(show_progress) if backend.is_main else "off")
    segment_start = log_start = time.perf_counter()
    model.train()
    with StopSignal() as stop:
        while state.step < total_steps and not state.early_stopped:
            position = [state.epoch, state.cursor]
            window = order.next_window(state)
            if window is None:
                continue
            result = runner.compute(window, features, position)
            problem = guard.verdict(result.loss, result.grad_norm)
            if problem and not runner.fp16_overflow(result):
                state = refuse_step(problem, result, window, state, guard, restorer, logbook, cfg, run_dir)
                continue
            runner.apply(state.step)
            guard.accept(result.loss)
            state.record_step(result.loss, result.tokens, result.samples)
            progress.step()
            epoch_length = len(order.windows(state.epoch))
            if state.step % cfg.log_every == 0 or state.step == total_steps:
                record = _metrics_line(state, epoch_length, scheduler, result, time.perf_counter() - log_start)
                # An objective may add its own training numbers (a preference run's rewards and margins).
                record.update(getattr(objective, "drain_stats", dict)())
                logbook.write("metrics", record)
                progress.metrics(record)
                state.close_log_period()
                log_start = time.perf_counter()
            new_best = False
            if evaluate and cfg.eval_every and state.step % cfg.eval_every == 0 and state.step != total_steps:
                state.wall_s += time.perf_counter() - segment_start
                metrics = evaluate(backend.unwrap(model))
                progress.evaluation(state.step, metrics)
                new_best = _evaluate(metrics, state, cfg, best_metric, logbook)
                model.train()
                # Evaluation time is not training time.
                segment_start = log_start = time.perf_counter()
            if new_best or saver.due(state, epoch_length, total_steps, stop.requested):
                state.wall_s += time.perf_counter() - segment_start
                segment_start = time.perf_counter()
                path = saver.save(state)
                if stop.requested:
                    progress.close()
                    raise TrainingInterrupted(state.step, path)
    state.wall_s += time.perf_counter() - segment_start
    progress.close()
    logbook.close()
    return TrainStats(
        steps=state.step, samples=state.samples, tokens=state.tokens, wall_s=state.wall_s,
        early_stopped=state.early_stopped, rollbacks=state.rollbacks, skipped_batches=len(state.skipped),
        best={"metric": best_metric, "value": state.best_metric, "step": state.best_step} if state.best_step else None,
        optimizer_state_bytes=state_bytes(optimizer),
    )


def _metrics_line(state: LoopState, epoch_length: int, scheduler, result, elapsed: float) -> dict:
    """One metrics.jsonl record: the mean loss since the last line and the throughput."""
    elapsed = max(elapsed, 1e-9)
    return {
        "step": state.step,
        "epoch": round(state.epoch + state.cursor / epoch_length, 4),
        "loss": state.log_loss / state.log_steps,
        "lr": scheduler.get_last_lr()[0],
        "grad_norm": result.grad_norm,
        "tokens_per_s": state.log_tokens / elapsed,
        "samples_per_s": state.log_samples / elapsed,
    }


def _evaluate(metrics: dict, state: LoopState, cfg, best_metric: str, logbook: Logbook) -> bool:
    """Log an evaluation and track the best one; returns whether it calls for a checkpoint
    (a new best with keep_best). Sets ``state.early_stopped`` when patience runs out."""
    logbook.write("eval", {"step": state.step, **metrics})
    if improved(metrics[best_metric], state.best_metric, best_metric):
        state.best_metric, state.best_step, state.evals_without_improvement = metrics[best_metric], state.step, 0
        return cfg.keep_best
    state.evals_without_improvement += 1
    if cfg.early_stopping_patience and state.evals_without_improvement >= cfg.early_stopping_patience:
        state.early_stopped = True
        logbook.event(state.step, "early_stop", metric=best_metric, best=state.best_metric, best_step=state.best_step)
    return False
