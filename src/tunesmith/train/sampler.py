"""The order examples are trained in: seeded per epoch, cut into windows of micro-batches.

A window is one optimizer step's micro-batches. The order depends only on (seed, epoch),
so any step's data can be recomputed without replaying the run, which is what makes
resume and rollback exact; in a multi-process run each process takes its slice of each
window (``Backend.shard``), so the order does not depend on the number of processes.
"""

from __future__ import annotations

import math

import torch


def epoch_windows(
    n: int, batch_size: int, grad_accum: int, seed: int, epoch: int, lengths: list[int] | None = None
) -> list[list[list[int]]]:
    """The epoch's example order, cut into micro-batches grouped by optimizer step.

    With ``lengths``, examples are grouped by length: the shuffled order is cut into pools
    of 64 micro-batches, each pool is sorted by length and cut into micro-batches, and the
    micro-batches are shuffled again. Batches then hold examples of similar length, so far
    less compute is spent on padding, while the data stays random. The last window of an
    epoch may hold fewer micro-batches.
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


class EpochOrder:
    """The windows of the current epoch, computed once per epoch."""

    def __init__(self, n: int, cfg, seed: int, lengths: list[int] | None):
        self.n, self.cfg, self.seed, self.lengths = n, cfg, seed, lengths
        self._epoch: int | None = None
        self._windows: list = []

    def windows(self, epoch: int) -> list[list[list[int]]]:
        if epoch != self._epoch:
            self._epoch = epoch
            self._windows = epoch_windows(self.n, self.cfg.batch_size, self.cfg.grad_accum, self.seed, epoch,
                                          self.lengths)
        return self._windows

    def next_window(self, state) -> list[list[int]] | None:
        """Advance ``state`` (epoch, cursor) past the next window and return it; None when
        that position is an epoch end or a window skipped earlier (never to be reused)."""
        windows = self.windows(state.epoch)
        if state.cursor >= len(windows):
            state.epoch, state.cursor = state.epoch + 1, 0
            return None
        position = [state.epoch, state.cursor]
        state.cursor += 1
        return None if position in state.skipped else windows[position[1]]
