"""The training loop, readable top to bottom.

setup (or restore a checkpoint) -> for each optimizer step: micro-batches -> forward ->
loss -> backward -> guard -> clip -> optimizer -> schedule -> log -> maybe
eval/checkpoint/early stop.

The loop knows nothing about the method (LoRA, full, ...) and only talks to the task
through the objective: ``collate``, ``count_targets`` and ``loss_sum``. Everything
needed to continue a run exactly lives in :class:`LoopState`, which every checkpoint
stores, so a resumed run reproduces the uninterrupted one step for step.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from tunesmith.methods.freeze import find_blocks
from tunesmith.train.checkpoint import (
    latest_valid_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from tunesmith.train.guards import GuardStop, HealthGuard
from tunesmith.train.memory import fix_mmap_threshold
from tunesmith.train.optim import build_optimizer, build_scheduler
from tunesmith.train.precision import autocast


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


def epoch_windows(
    n: int, batch_size: int, grad_accum: int, seed: int, epoch: int, lengths: list[int] | None = None
) -> list[list[list[int]]]:
    """The epoch's example order, cut into micro-batches grouped by optimizer step.

    The order depends only on (seed, epoch), so any step's data can be recomputed without
    replaying the run. With ``lengths``, examples are grouped by length: the shuffled order
    is cut into pools of 64 micro-batches, each pool is sorted by length and cut into
    micro-batches, and the micro-batches are shuffled again. Batches then hold examples of
    similar length, so far less compute is spent on padding, while the data stays random.
    The last window of an epoch may hold fewer micro-batches.
    """
    generator = torch.Generator().manual_seed(seed * 1000 + epoch)
    order = torch.randperm(n, generator=generator).tolist()
    if lengths is not None:
        pool = batch_size * 64
        order = [i for start in range(0, n, pool)
                 for i in sorted(order[start : start + pool], key=lambda i: -lengths[i])]
    micro = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    if lengths is not None:
        micro = [micro[i] for i in torch.randperm(len(micro), generator=generator).tolist()]
    return [micro[i : i + grad_accum] for i in range(0, len(micro), grad_accum)]


def steps_per_epoch(n: int, batch_size: int, grad_accum: int) -> int:
    return math.ceil(math.ceil(n / batch_size) / grad_accum)


def planned_steps(n: int, cfg) -> int:
    """Optimizer steps a run of ``n`` examples will take under ``cfg`` (a TrainConfig)."""
    return cfg.max_steps or max(1, math.ceil(cfg.epochs * steps_per_epoch(n, cfg.batch_size, cfg.grad_accum)))


class _StopSignal:
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


def _jsonl_truncate(path: Path, after_step: int) -> None:
    """Drop lines logged after ``after_step``: a resumed run writes them again."""
    if path.is_file():
        lines = [line for line in path.read_text(encoding="utf-8").splitlines()
                 if line.strip() and json.loads(line).get("step", 0) <= after_step]
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def _metric_improved(value: float, best: float | None, name: str) -> bool:
    lower_is_better = "loss" in name or name == "perplexity"
    return best is None or (value < best if lower_is_better else value > best)


def train(
    model,
    objective,
    features: list[dict],
    cfg,
    *,
    lr: float,
    seed: int,
    run_dir: Path,
    accelerator: Accelerator,
    evaluate: Callable[[object], dict] | None = None,
    show_progress: bool = True,
    resume_from: Path | None = None,
    config_hash: str | None = None,
    hooks=None,
) -> TrainStats:
    """Train ``model`` in place on ``features`` according to ``cfg`` (a TrainConfig).

    ``evaluate(model)`` is called every ``cfg.eval_every`` steps; its metrics go to
    ``eval.jsonl``. Per-step metrics go to ``metrics.jsonl`` every ``cfg.log_every`` steps;
    guard events (skips, rollbacks) to ``events.jsonl``. ``resume_from`` is a checkpoint
    directory to continue from. ``hooks`` (a ``TrainingHooks``) lets a method add a
    regulariser, act after each optimizer step and keep its state in checkpoints.

    Raises:
        TrainingInterrupted: after SIGINT/SIGTERM (a checkpoint was saved first).
        GuardStop: the loss kept diverging after ``cfg.guard.max_rollbacks`` rollbacks.
    """
    total_steps = planned_steps(len(features), cfg)
    if cfg.mmap_threshold_kb and accelerator.device.type == "cpu":
        fix_mmap_threshold(cfg.mmap_threshold_kb * 1024)
    optimizer = build_optimizer(model, lr, cfg.weight_decay, cfg.adam_epsilon)
    scheduler = build_scheduler(optimizer, cfg.scheduler, round(cfg.warmup_ratio * total_steps), total_steps)
    base_lrs = list(scheduler.base_lrs)
    model, optimizer = accelerator.prepare(model, optimizer)
    # Only training's forward passes go through the compiled module; evaluation,
    # checkpoints and method hooks keep using the plain one.
    forward_model = torch.compile(model, dynamic=True) if cfg.compile else model
    device = accelerator.device
    params = [p for p in model.parameters() if p.requires_grad]
    shallow = _shallow_params(accelerator.unwrap_model(model), cfg) if cfg.shallow_grad_scale < 1 else []
    # Dynamic loss scaling only for fp16: bf16 and fp32 have fp32's range and need none.
    scaler = torch.amp.GradScaler(device.type) if cfg.precision == "fp16" else None
    # Grouping by length only pays where batches are padded; otherwise keep batches fully random.
    grouped = cfg.group_by_length and getattr(objective, "pads_batches", True)
    lengths = [len(f["input_ids"]) for f in features] if grouped else None
    guard = HealthGuard(cfg.guard)
    best_name = cfg.best_metric
    extra_loss = hooks.extra_loss if hooks else None
    after_step = hooks.after_optimizer_step if hooks else None
    method_state = hooks.state if hooks else None
    checkpoint_context = hooks.checkpoint_context if hooks else None
    unwrapped = accelerator.unwrap_model(model)

    state = LoopState()
    # The rollback target before the first checkpoint exists: the initial trainable weights.
    initial = {
        "weights": [p.detach().clone() for p in params],
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "method": copy.deepcopy(method_state(unwrapped)) if method_state else None,
    }

    def restore(path: Path | None) -> None:
        nonlocal state
        keep = {"skipped": state.skipped, "rollbacks": state.rollbacks, "lr_scale": state.lr_scale}
        if path is None:
            with torch.no_grad():
                for p, w in zip(params, initial["weights"]):
                    p.copy_(w)
            optimizer.load_state_dict(initial["optimizer"])
            scheduler.load_state_dict(initial["scheduler"])
            if method_state:
                hooks.load_state(unwrapped, copy.deepcopy(initial["method"]))
            state = LoopState(**keep)
        else:
            manifest = load_checkpoint(path, unwrapped, optimizer, scheduler, scaler)
            if method_state and manifest.get("method_state") is not None:
                hooks.load_state(unwrapped, manifest["method_state"])
            state = LoopState(**manifest["state"])
            if keep["rollbacks"] > state.rollbacks:  # a rollback, not a resume: keep the guard's memory
                state.skipped, state.rollbacks, state.lr_scale = keep["skipped"], keep["rollbacks"], keep["lr_scale"]
        # The scheduler derives each lr from base_lrs, so lowering them lowers the whole schedule.
        scheduler.base_lrs = [b * state.lr_scale for b in base_lrs]
        for group, base, factor in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
            group["lr"] = base * factor(scheduler.last_epoch)

    if resume_from is not None:
        restore(resume_from)
        for name in ("metrics.jsonl", "eval.jsonl", "events.jsonl"):
            _jsonl_truncate(run_dir / name, state.step)

    metrics_file = (run_dir / "metrics.jsonl").open("a", encoding="utf-8")
    eval_file = (run_dir / "eval.jsonl").open("a", encoding="utf-8")
    events_file = (run_dir / "events.jsonl").open("a", encoding="utf-8")

    def event(kind: str, **info) -> None:
        events_file.write(json.dumps({"step": state.step, "event": kind, **info}) + "\n")
        events_file.flush()

    def checkpoint() -> Path:
        extra = method_state(unwrapped) if method_state else None
        with checkpoint_context(unwrapped) if checkpoint_context else contextlib.nullcontext():
            path = save_checkpoint(run_dir, state.step, unwrapped, optimizer, scheduler, asdict(state),
                                   scaler=scaler, config_hash=config_hash, method_state=extra)
        protect = {state.best_step} if cfg.keep_best and state.best_step is not None else set()
        prune_checkpoints(run_dir, cfg.keep_last_n, protect)
        return path

    bar = tqdm(total=total_steps, initial=state.step, desc="train", unit="step",
               disable=not show_progress, dynamic_ncols=True)
    cache: dict[int, list] = {}
    segment_start = time.perf_counter()
    log_start = segment_start
    model.train()
    with _StopSignal() as stop:
        while state.step < total_steps and not state.early_stopped:
            if state.epoch not in cache:
                cache.clear()
                cache[state.epoch] = epoch_windows(len(features), cfg.batch_size, cfg.grad_accum, seed,
                                                   state.epoch, lengths)
            windows = cache[state.epoch]
            if state.cursor >= len(windows):
                state.epoch, state.cursor = state.epoch + 1, 0
                continue
            position = [state.epoch, state.cursor]
            window = windows[state.cursor]
            state.cursor += 1
            if position in state.skipped:
                continue

            batches = [objective.collate([features[i] for i in idx]) for idx in window]
            # Normalise by the targets of the whole window so the update doesn't depend on how
            # the examples were split into micro-batches.
            targets = max(sum(objective.count_targets(b) for b in batches), 1)
            step_loss = torch.zeros((), device=device)
            step_tokens = step_samples = 0
            for batch in batches:
                # Counted on the host before the copy: on a GPU, reading them back would be a sync.
                step_tokens += int(batch["attention_mask"].sum())
                # A packed row holds several examples; samples/s counts examples.
                step_samples += int(batch["num_examples"]) if "num_examples" in batch else batch["input_ids"].shape[0]
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                with autocast(device, cfg.precision):
                    loss = objective.loss_sum(forward_model, batch) / targets
                accelerator.backward(scaler.scale(loss) if scaler else loss)
                step_loss += loss.detach()
            if extra_loss:
                with autocast(device, cfg.precision):
                    penalty = extra_loss(unwrapped)
                accelerator.backward(scaler.scale(penalty) if scaler else penalty)
            if scaler:
                scaler.unscale_(optimizer)
            for p in shallow:
                if p.grad is not None:
                    p.grad.mul_(cfg.shallow_grad_scale)
            grad_norm = float(accelerator.clip_grad_norm_(params, cfg.max_grad_norm or float("inf")))
            loss_value = float(step_loss)

            problem = guard.verdict(loss_value, grad_norm)
            if problem and not (scaler and not math.isfinite(grad_norm)):
                optimizer.zero_grad(set_to_none=True)
                state.skipped.append(position)
                event("skip", reason=problem, loss=loss_value, grad_norm=grad_norm, epoch=position[0],
                      window=position[1], sample_ids=[i for idx in window for i in idx])
                if guard.record_skip(state.step):
                    if state.rollbacks >= cfg.guard.max_rollbacks:
                        event("stop", reason=f"still unhealthy after {state.rollbacks} rollbacks")
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
                    restore(target)
                    guard.after_rollback()
                    # The abandoned steps will be logged again; events.jsonl keeps the record.
                    for fh in (metrics_file, eval_file):
                        fh.close()
                        _jsonl_truncate(Path(fh.name), state.step)
                    metrics_file = (run_dir / "metrics.jsonl").open("a", encoding="utf-8")
                    eval_file = (run_dir / "eval.jsonl").open("a", encoding="utf-8")
                    event("rollback", from_step=from_step, to_step=state.step, lr_scale=state.lr_scale,
                          checkpoint=str(target) if target else "initial weights")
                continue

            if scaler:
                scaler.step(optimizer)  # skips the update itself when fp16 gradients overflowed
                scaler.update()
            else:
                optimizer.step()
            if after_step:
                after_step(unwrapped, state.step)  # needs this step's gradients: before zero_grad
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            guard.accept(loss_value)
            state.step += 1
            state.log_loss += loss_value
            state.log_steps += 1
            state.log_tokens += step_tokens
            state.log_samples += step_samples
            bar.update(1)

            if state.step % cfg.log_every == 0 or state.step == total_steps:
                elapsed = max(time.perf_counter() - log_start, 1e-9)
                mean_loss = state.log_loss / state.log_steps
                record = {
                    "step": state.step,
                    "epoch": round(state.epoch + state.cursor / len(windows), 4),
                    "loss": mean_loss,
                    "lr": scheduler.get_last_lr()[0],
                    "grad_norm": grad_norm,
                    "tokens_per_s": state.log_tokens / elapsed,
                    "samples_per_s": state.log_samples / elapsed,
                }
                metrics_file.write(json.dumps(record) + "\n")
                metrics_file.flush()
                bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{record['lr']:.2e}", tok_s=f"{record['tokens_per_s']:.0f}")
                state.samples += state.log_samples
                state.tokens += state.log_tokens
                state.log_loss, state.log_steps, state.log_tokens, state.log_samples = 0.0, 0, 0, 0
                log_start = time.perf_counter()

            save_now = bool(cfg.save_every and state.step % cfg.save_every == 0)
            save_now |= cfg.save_every_epoch and state.cursor == len(windows)
            if evaluate and cfg.eval_every and state.step % cfg.eval_every == 0 and state.step != total_steps:
                now = time.perf_counter()
                state.wall_s += now - segment_start
                metrics = evaluate(accelerator.unwrap_model(model))
                eval_file.write(json.dumps({"step": state.step, **metrics}) + "\n")
                eval_file.flush()
                best_name = best_name or ("accuracy" if "accuracy" in metrics else "eval_loss")
                if _metric_improved(metrics[best_name], state.best_metric, best_name):
                    state.best_metric, state.best_step, state.evals_without_improvement = metrics[best_name], state.step, 0
                    save_now |= cfg.keep_best
                else:
                    state.evals_without_improvement += 1
                    if cfg.early_stopping_patience and state.evals_without_improvement >= cfg.early_stopping_patience:
                        state.early_stopped = True
                        event("early_stop", metric=best_name, best=state.best_metric, best_step=state.best_step)
                model.train()
                # Evaluation time is not training time.
                segment_start = log_start = time.perf_counter()
            if save_now or stop.requested or (cfg.save_every and state.step == total_steps):
                state.wall_s += time.perf_counter() - segment_start
                segment_start = time.perf_counter()
                path = checkpoint()
                if stop.requested:
                    bar.close()
                    raise TrainingInterrupted(state.step, path)
    state.wall_s += time.perf_counter() - segment_start
    bar.close()
    for fh in (metrics_file, eval_file, events_file):
        fh.close()
    return TrainStats(
        steps=state.step, samples=state.samples, tokens=state.tokens, wall_s=state.wall_s,
        early_stopped=state.early_stopped, rollbacks=state.rollbacks, skipped_batches=len(state.skipped),
        best={"metric": best_name, "value": state.best_metric, "step": state.best_step} if state.best_step else None,
    )


def _shallow_params(model, cfg) -> list:
    """Embedding weights and the first ``cfg.shallow_layers`` blocks: where spikes start."""
    params = [p for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()]
    if cfg.shallow_layers:
        for block in list(find_blocks(model))[: cfg.shallow_layers]:
            params.extend(block.parameters())
    return [p for p in params if p.requires_grad]
