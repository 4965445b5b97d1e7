"""The training loop, readable top to bottom.

setup -> for each optimizer step: micro-batches -> forward -> loss -> backward ->
clip -> optimizer -> schedule -> log -> maybe eval/checkpoint.

The loop knows nothing about the method (LoRA, full, ...) and only talks to the task
through the objective: ``collate``, ``count_targets`` and ``loss_sum``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from tunesmith.train.checkpoint import save_checkpoint
from tunesmith.train.optim import build_optimizer, build_scheduler
from tunesmith.train.precision import autocast


@dataclass
class TrainStats:
    """What the loop measured; the run turns it into summary.json."""

    steps: int = 0
    samples: int = 0
    tokens: int = 0  # non-padding input tokens
    wall_s: float = 0.0
    losses: list[tuple[int, float]] = field(default_factory=list)
    evals: list[tuple[int, dict]] = field(default_factory=list)


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


def _windows(features, cfg, seed) -> Iterator[tuple[int, list[list[int]]]]:
    lengths = [len(f["input_ids"]) for f in features] if cfg.group_by_length else None
    epoch = 0
    while True:
        for window in epoch_windows(len(features), cfg.batch_size, cfg.grad_accum, seed, epoch, lengths):
            yield epoch, window
        epoch += 1


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
) -> TrainStats:
    """Train ``model`` in place on ``features`` according to ``cfg`` (a TrainConfig).

    ``evaluate(model)`` is called every ``cfg.eval_every`` steps; its metrics go to
    ``eval.jsonl``. Per-step metrics go to ``metrics.jsonl`` every ``cfg.log_every`` steps.
    """
    per_epoch = steps_per_epoch(len(features), cfg.batch_size, cfg.grad_accum)
    total_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * per_epoch))
    optimizer = build_optimizer(model, lr, cfg.weight_decay)
    scheduler = build_scheduler(optimizer, cfg.scheduler, round(cfg.warmup_ratio * total_steps), total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    params = [p for p in model.parameters() if p.requires_grad]
    device = accelerator.device

    stats = TrainStats()
    metrics_file = (run_dir / "metrics.jsonl").open("a", encoding="utf-8")
    eval_file = (run_dir / "eval.jsonl").open("a", encoding="utf-8")
    bar = tqdm(total=total_steps, desc="train", unit="step", disable=not show_progress, dynamic_ncols=True)
    windows = _windows(features, cfg, seed)
    # Accumulate on-device and read back only at log steps: .item() every step stalls the pipeline.
    window_loss = torch.zeros((), device=device)
    window_steps, window_tokens, window_samples, window_start = 0, 0, 0, time.perf_counter()
    start, eval_s = time.perf_counter(), 0.0
    model.train()
    for step in range(1, total_steps + 1):
        epoch, window = next(windows)
        batches = [objective.collate([features[i] for i in idx]) for idx in window]
        # Normalise by the targets of the whole window so the update doesn't depend on how
        # the examples were split into micro-batches.
        targets = max(sum(objective.count_targets(b) for b in batches), 1)
        for batch in batches:
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            with autocast(device, cfg.precision):
                loss = objective.loss_sum(model, batch) / targets
            accelerator.backward(loss)
            window_loss += loss.detach()
            window_tokens += int(batch["attention_mask"].sum())
            window_samples += batch["input_ids"].shape[0]
        grad_norm = accelerator.clip_grad_norm_(params, cfg.max_grad_norm or float("inf"))
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        window_steps += 1
        bar.update(1)

        if step % cfg.log_every == 0 or step == total_steps:
            elapsed = time.perf_counter() - window_start
            mean_loss = float(window_loss) / window_steps
            record = {
                "step": step,
                "epoch": round(epoch + _position_in_epoch(step, per_epoch), 4),
                "loss": mean_loss,
                "lr": scheduler.get_last_lr()[0],
                "grad_norm": float(grad_norm),
                "tokens_per_s": window_tokens / elapsed,
                "samples_per_s": window_samples / elapsed,
            }
            metrics_file.write(json.dumps(record) + "\n")
            metrics_file.flush()
            stats.losses.append((step, mean_loss))
            bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{record['lr']:.2e}", tok_s=f"{record['tokens_per_s']:.0f}")
            stats.samples += window_samples
            stats.tokens += window_tokens
            window_loss.zero_()
            window_steps, window_tokens, window_samples, window_start = 0, 0, 0, time.perf_counter()

        if evaluate and cfg.eval_every and step % cfg.eval_every == 0 and step != total_steps:
            eval_start = time.perf_counter()
            metrics = evaluate(accelerator.unwrap_model(model))
            stats.evals.append((step, metrics))
            eval_file.write(json.dumps({"step": step, **metrics}) + "\n")
            eval_file.flush()
            model.train()
            # Evaluation time is not training time.
            window_start = time.perf_counter()
            eval_s += window_start - eval_start
        if cfg.save_every and (step % cfg.save_every == 0 or step == total_steps):
            save_checkpoint(run_dir, step, accelerator.unwrap_model(model), optimizer, scheduler,
                            {"epoch": epoch, "seed": seed, "total_steps": total_steps})
    stats.steps = total_steps
    stats.wall_s = time.perf_counter() - start - eval_s
    bar.close()
    metrics_file.close()
    eval_file.close()
    return stats


def _position_in_epoch(step: int, per_epoch: int) -> float:
    done = step % per_epoch
    return (done if done else per_epoch) / per_epoch
