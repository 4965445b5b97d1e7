"""Numbers an objective gathers from its training batches for the next metrics line."""

from __future__ import annotations

import torch


class StepStats:
    """Collects named values batch by batch; :meth:`drain` hands back their means and starts over."""

    def __init__(self):
        self._values: dict[str, list[float]] = {}

    def note(self, name: str, values) -> None:
        """Add ``values`` (a tensor or a list of numbers) under ``name``."""
        if isinstance(values, torch.Tensor):
            values = values.detach().float().cpu().reshape(-1).tolist()
        if values:
            self._values.setdefault(name, []).extend(values)

    def drain(self) -> dict[str, float]:
        """The mean of each name's values since the last call."""
        out = {name: sum(v) / len(v) for name, v in self._values.items() if v}
        self._values = {}
        return out
