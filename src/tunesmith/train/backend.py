"""Where training runs: device, rank, world size and the collective operations.

The loop asks the backend instead of assuming one process: which slice of a window of
micro-batches is this process's (``shard``), the sum of a count over all processes
(``all_reduce_sum``: target counts, so every token weighs the same wherever it was
computed; the step's loss, so every process's guard takes the same decision), and
whether this process writes the run's files (``is_main``). Today it runs one process
through accelerate; multi-process engines plug in here.
"""

from __future__ import annotations

import torch
from accelerate import Accelerator


class Backend:
    """One training process and its place among the others (accelerate underneath)."""

    def __init__(self, accelerator: Accelerator | None = None):
        self.accelerator = accelerator or Accelerator(cpu=not torch.cuda.is_available())

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def rank(self) -> int:
        return self.accelerator.process_index

    @property
    def world_size(self) -> int:
        return self.accelerator.num_processes

    @property
    def is_main(self) -> bool:
        """Only the main process writes run files (logs, checkpoints, summary, final/)."""
        return self.accelerator.is_main_process

    def shard(self, items: list) -> list:
        """This process's slice of ``items`` (every ``world_size``-th item from ``rank``):
        together the processes cover each item exactly once."""
        return items if self.world_size == 1 else items[self.rank :: self.world_size]

    def all_reduce_sum(self, value):
        """``value`` (a number or tensor) summed over every process."""
        if self.world_size == 1:
            return value
        tensor = torch.as_tensor(value, device=self.device, dtype=torch.float64)
        total = self.accelerator.reduce(tensor, reduction="sum")
        return total if isinstance(value, torch.Tensor) else type(value)(total.item())

    def prepare(self, model, optimizer):
        return self.accelerator.prepare(model, optimizer)

    def backward(self, loss: torch.Tensor) -> None:
        self.accelerator.backward(loss)

    def clip_grad_norm(self, params, max_norm: float | None) -> float:
        """Clip (``None``: measure only) and return the total gradient norm."""
        return float(self.accelerator.clip_grad_norm_(params, max_norm or float("inf")))

    def unwrap(self, model):
        return self.accelerator.unwrap_model(model)
